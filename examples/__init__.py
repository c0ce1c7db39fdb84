"""Models that live outside the package and plug into it through a config's ``class_path``.

``examples.infogan.InfoGAN`` is the worked example of docs/extending.md; ``configs/examples/infogan.yaml`` trains
it (run from the repository root, which Python puts on the import path: ``python -m gan_lightning fit --config
configs/examples/infogan.yaml``).
"""
