"""The Gradio app: widgets ⇄ Recipe, then Plan (config.json only) or Run (the whole pipeline) via compressor.api.

`python app.py` (the project's root) serves it (GRADIO_SERVER_PORT and GRADIO_SERVER_NAME are honoured); tests
call `build_app()` and launch it with `launch_options()`. Torch and transformers are imported only inside the
callbacks, through compressor.api, so the UI starts fast. Labels are plain words; each info text is the pydantic
field's description and names the recipe key. The form opens on a valid preset (the embedded default
`demo/tiny-llava` when the configured Hub serves it, else the smallest recipe of recipes/). The Hub token comes
from the password box or the login button (a Space's OAuth, or Gradio's local stand-in, which signs in as the
machine's saved Hub user); it is never logged, shown or written to a file.

A run executes in a child process of its own (`Child`: its own process group and temporary folder), so Cancel,
or the visitor closing the page, really stops it; its run folder stays resumable (api.run writes each stage's
record atomically). One run goes at a time per app instance (`LINE`); the visitors after it see their place
("2nd in line") and their run starts when the one ahead ends. Each visitor's runs live in their own folder.
With "Run on Hugging Face Jobs" the run goes to a Job instead (compressor.jobs, with the visitor's own token and
a flavour suggested from the plan's memory estimate); the page follows its stage and logs, Cancel cancels it,
and the pushed model's link comes at the end. The API (README, "The app's API") is the named endpoints
`/plan`, `/run`, `/run_on_jobs` and `/cancel`.

The parts, each needing only those before it:
- `texts`: the widgets' order (`NAMES`), labels, help texts, the intro and the CSS;
- `messages`: errors in the page's words (`for_page`, `error_md`) and the plan table (`plan_md`);
- `form`: the presets, and form ⇄ recipe (`recipe_of`, `yaml_view`, `widget_values`, `load_yaml`);
- `identity`: the login, the visitor's token (for a run, for a Job), the session, the suggested output repo;
- `child`: the run's own process (`Child`);
- `line`: the waiting line (`Line`, `Ticket`, `LINE`);
- `board`: the stage board (`Board`), the plots (`PlotWatch`) and the results;
- `jobs_view`: a run as a Hugging Face Job, followed on the page;
- `run`: Plan and Run (`on_plan`, `on_run`: run folder, line, child, board), Cancel;
- `endpoints`: the API's `/plan`, `/run` and `/run_on_jobs`;
- `layout`: the widgets on the page;
- `wiring`: `build_app()` (layout + callbacks + endpoints) and `main()`.
"""
