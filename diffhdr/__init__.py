"""DiffHDR: re-exposing LDR videos into linear HDR with Wan-2.1-VACE and LoRA (arXiv 2604.06161)."""

__version__ = "0.1.0"
