"""`xft plan`: will a config fit a GPU, and how fast will it run (docs/plan.md).

Not to be confused with xft.engine.plan, which counts a run's steps.

tracker        live tensor bytes over a training step, by storage
architectures  the model's config.json without downloading (local dir or shipped JSON)
memory         one training step of the config's model on fake tensors, measured
speed          FLOPs per token and time per epoch
gpus           memory and peak bf16 throughput of common GPUs
report         terms, verdict, cheaper alternatives, printed lines (`xft plan`, `xft train`)
"""
