"""The Gradio app of compressor: `python app.py` serves it (the Space, the Docker image and `make app` run this
file). The app is the package compressor/app (its docstring says how it works); the names below are the ones
the tests and the Space use."""

import gradio as gr

from compressor.app.board import PLOTS, Board, results
from compressor.app.endpoints import recipe_from_yaml
from compressor.app.form import load_yaml, recipe_of, widget_values
from compressor.app.identity import suggest_repo
from compressor.app.line import Line
from compressor.app.messages import error_md, for_page, plan_md
from compressor.app.run import on_run, run_folder
from compressor.app.texts import NAMES
from compressor.app.wiring import build_app, launch_options, main

__all__ = ["NAMES", "PLOTS", "Board", "Line", "build_app", "error_md", "for_page", "gr", "launch_options"]
__all__ += ["load_yaml", "main", "on_run", "plan_md", "recipe_from_yaml", "recipe_of", "results"]
__all__ += ["run_folder", "suggest_repo", "widget_values"]

if __name__ == "__main__":
    main()
