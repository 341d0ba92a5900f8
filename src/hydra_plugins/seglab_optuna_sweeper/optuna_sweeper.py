"""``hydra/sweeper=optuna``: Hydra takes sweepers only from the ``hydra_plugins`` package; the
search itself is :class:`seglab.search.sweeper.SearchSweep` (imported when used: Hydra imports
this module on every start)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import Container, DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    """A search of Optuna's ask-and-tell over ``hydra.sweeper.space``; the options are
    :class:`seglab.search.sweeper.SearchSweep`'s."""

    def __init__(self, **options: Any) -> None:
        from seglab.cli import bad_input_in_one_line
        from seglab.search.sweeper import SearchSweep

        plain = {
            k: OmegaConf.to_container(v) if isinstance(v, Container) else v
            for k, v in options.items()
        }
        with bad_input_in_one_line("seglab train"):  # a bad search: one line, before any run
            self.search = SearchSweep(**plain)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = self.search.launcher

    def sweep(self, arguments: list[str]) -> None:
        from seglab.cli import bad_input_in_one_line

        with bad_input_in_one_line("seglab train"):
            fixed, study = self.search.prepare(arguments, self.validate_batch_is_legal)
        self.search.run(fixed, study)
