"""The Jobs endpoints: create, list, inspect, cancel a job and follow its logs (server-sent events); the
jobs themselves run in `jobs.Jobs`."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from .common import HubError
from .jobs import KEEP_ALIVE_SECONDS
from .request import Request


class JobEndpoints(Request):
    # -- jobs (see Jobs and local_argv)

    def _job_namespace(self, namespace: str, write: bool = False) -> None:
        if self.user is None:
            raise HubError(401, "You must be authenticated to use Jobs")
        if write:
            self._check_write(namespace, f"the jobs of {namespace}")
        elif not self._owns(namespace):
            raise HubError(403, f"You don't have the rights to see the jobs of {namespace}")

    def h_job_create(self, namespace: str) -> None:
        self._job_namespace(namespace, write=True)
        job = self.server.jobs.create(namespace, self.user["user"], self._json_body())
        self._json(job.answer())

    def h_jobs_list(self, namespace: str) -> None:
        self._job_namespace(namespace)
        stages = set(self.query.get("stage") or [])
        labels = [label.partition("=") for label in self.query.get("label") or []]
        jobs = [
            job.answer()
            for job in self.server.jobs.list(namespace)
            if (not stages or job.info["status"]["stage"] in stages)
            and all((job.info.get("labels") or {}).get(k) == v for k, _, v in labels)
        ]
        self._json(jobs)

    def h_job_info(self, namespace: str, job_id: str) -> None:
        self._job_namespace(namespace)
        self._json(self.server.jobs.get(namespace, job_id).answer())

    def h_job_cancel(self, namespace: str, job_id: str) -> None:
        self._job_namespace(namespace, write=True)
        self.server.jobs.stop(self.server.jobs.get(namespace, job_id), "CANCELED")
        self._json({})

    def h_job_logs(self, namespace: str, job_id: str) -> None:
        """Server-sent events, one `data: {"data": line, "timestamp": …}` per line: the lines so far (the last
        `tail` of them if given), then each new one as it comes, until the job ends; a keep-alive comment while
        it is silent. The answer has no length: it ends when the connection closes."""
        self._job_namespace(namespace)
        job = self.server.jobs.get(namespace, job_id)
        tail = (self.query.get("tail") or [""])[-1]
        if tail and not tail.isdigit():
            raise HubError(400, f"Invalid tail: {tail!r}")
        self.close_connection, self._answered = True, True
        self.send_response(200)
        for key, value in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")):
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        sent = b""
        with job.changed:
            i = max(len(job.events) - int(tail), 0) if tail else 0
        while True:
            with job.changed:
                if i >= len(job.events) and not job.done:
                    job.changed.wait(KEEP_ALIVE_SECONDS)
                batch, done = job.events[i:], job.done
            i += len(batch)
            chunk = (
                b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in batch) or b": keep-alive\n\n"
            )
            if done and not batch:
                break
            self.wfile.write(chunk)
            self.wfile.flush()
            sent += chunk
        if self.server.transcript is not None:
            self.server.transcript.append((self.command, urlsplit(self.path).path, 200, sent))
