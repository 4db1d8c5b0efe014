"""The Gradio web demo of the vocoder toolkit (imports `vocoder`, never the reverse).

`VocoderDemo` (app.handlers) does the work as plain functions; `build_demo` and `launch`
(app.main) put a page in front of it. Start it with `vocoder demo`. An install puts this
folder at `vocoder.app`, so its modules import each other relatively.
"""

from .handlers import DemoResult, DemoSettings, Rendering, VocoderDemo
from .main import build_demo, launch

__all__ = ["DemoResult", "DemoSettings", "Rendering", "VocoderDemo", "build_demo", "launch"]
