"""``python -m evalkit``, and ``torchrun --nproc_per_node=K -m evalkit score ...``."""
from evalkit.cli import main

main(prog_name="evalkit")
