"""seglab's Optuna sweeper for Hydra (``hydra/sweeper=optuna``); Hydra finds plugins here."""
