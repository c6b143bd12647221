"""Running pipelines: the runner that feeds the engine from the log and commits to the store,
the manager of their lifecycle, reference tables and live subscriptions."""
