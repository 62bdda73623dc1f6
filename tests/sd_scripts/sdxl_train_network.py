"""Stand-in for Kohya's sdxl_train_network.py (SDXL LoRA): same arguments, simulated training."""

from library.trainer import main

if __name__ == "__main__":
    main(sdxl=True)
