from gan_lightning.early_signals import catch_signals_early

catch_signals_early("SIGUSR1")  # before the heavy imports below: SLURM's warning may come while they run

from gan_lightning.cli import main  # noqa: E402

main()
