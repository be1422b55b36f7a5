"""Training: the command line (`arguments`), the run's data (`run_data`, `window_rows`), model
(`model_building`) and optimizer (`optimizer`), the loop (`loop`), its final evaluation and report
(`final_evaluation`, `run_report`), checkpoints, batching, the non-finite-loss guard, the model card and the Hub export (`hub_export`)."""
