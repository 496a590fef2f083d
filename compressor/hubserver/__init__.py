"""An embedded, Hugging Face Hub-compatible HTTP server (standard library, plus PyYAML for card metadata and
huggingface_hub for the list of Jobs hardware flavours): the Hub of the demo (`compressor demo`) and of the
tests, on 127.0.0.1, so pulls, pushes and Jobs run end to end without the network.

It answers what the genuine `huggingface_hub` client and `transformers.from_pretrained` call when
`HF_ENDPOINT` points here and `HF_HUB_DISABLE_XET=1`: whoami, repo create/delete/settings, repo info at a
revision, tree and paths-info listings, refs and commits, card validation, preupload, the Git LFS batch API
(basic transfer), NDJSON commits and `/resolve` downloads with ranges. Models, datasets and spaces alike.
And the Jobs API (`run_job`, `run_uv_job`, `inspect_job`, `list_jobs`, `fetch_job_logs`, `cancel_job`,
`wait_for_job`): each job's command runs here, in a subprocess with this Python environment (see `local_argv`),
so a submitted run really executes; its secrets reach only that subprocess's environment.

What it does not do: Xet storage, the git protocol (clone, fetch, push) or LFS downloads through the batch API
(downloads go through `/resolve`), repo listing and search, branch and tag creation, discussions (a
`create_pr` commit lands on a `refs/pr/N` ref, nothing more), running Spaces, a job's Docker image or
hardware (the command runs here whatever the flavour), OAuth or token creation (tokens are given at start-up),
rate limits. It is not a security boundary: it binds loopback unless told otherwise, and warns then.

Data lives in one folder, so a server can be stopped and started again on it:

    DATA/blobs/<sha256>                                   every file's bytes, addressed by content
    DATA/repos/<models|datasets|spaces>/<ns>/<name>/repo.json      owner, visibility, gating, refs
    DATA/repos/<models|datasets|spaces>/<ns>/<name>/commits/<sha>.json   parents, message, files
    DATA/jobs/<ns>/<id>/job.json, logs.jsonl, work/                        a job (see Jobs)

A commit is visible only once `repo.json` has been atomically replaced to point at it: a rejected or
interrupted commit leaves nothing behind. Tokens are given at start-up and never logged.

The parts: `store` (repos, commits, blobs, listings), `cards` (card rules), `jobs` (the Jobs runner),
`faults` (failures on purpose, for the tests), the HTTP layer (`request` the dispatch and checks, `account`,
`reads`, `writes` and `jobs_api` the endpoints) and `server` (`HubServer`, `serve`, the command line);
`common` holds the error and the helpers they share.
"""

from compressor.hubserver.cards import validate_card
from compressor.hubserver.common import HubError
from compressor.hubserver.faults import Fault, Faults
from compressor.hubserver.jobs import Job, Jobs, job_flavors, local_argv
from compressor.hubserver.server import HubServer, add_arguments, main, parse_token, run, serve
from compressor.hubserver.store import Store

__all__ = [
    "Fault",
    "Faults",
    "HubError",
    "HubServer",
    "Job",
    "Jobs",
    "Store",
    "add_arguments",
    "job_flavors",
    "local_argv",
    "main",
    "parse_token",
    "run",
    "serve",
    "validate_card",
]
