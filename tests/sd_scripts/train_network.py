"""Stand-in for Kohya's train_network.py (SD1.5 LoRA): same arguments, simulated training."""

from library.trainer import main

if __name__ == "__main__":
    main(sdxl=False)
