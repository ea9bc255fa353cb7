"""MkDocs hook: the configuration reference is generated from the config dataclasses at every
build (``nnpot.train.config_reference``), so the page cannot drift from the code."""

from nnpot.active_learning.config import LearnConfig
from nnpot.train.config import TrainConfig
from nnpot.train.config_reference import config_reference


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "configuration.md":
        return markdown
    return (markdown + "\n## Training (`nnpot train`, `nnpot cv`)\n\n"
            + config_reference(TrainConfig, heading=3)
            + "\n## Active learning (`nnpot learn`)\n\n"
            + config_reference(LearnConfig, heading=3))
