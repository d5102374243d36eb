"""``python -m rlrun ...`` is ``rlrun ...`` (launchers need it: ``torchrun -m rlrun``,
``deepspeed ... -m rlrun``)."""
from rlrun.wiring.cli import main

if __name__ == "__main__":
    main()
