"""Fine-tune jobs (the paper's transfer learning, section 2.3): a lab posts labelled spectra, a
worker trains a new model version from an existing one, the service switches to it.

Modules and who may import them (the API process never imports torch):
- `schemas`, `archive`, `ingest`, `store`, `runner`: numpy + stdlib + pydantic; used by `service`.
- `worker` (the polling loop, one job at a time per device) and `run_job` (runs ONE job; imports
  `training` lazily, DDP-aware under torchrun): the training side.

The job store (`store.JobStore`, SQLite in WAL mode) is the only channel between the two sides.
"""
