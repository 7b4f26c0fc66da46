"""PersonViT: self-supervised ViT pretraining and ReID fine-tuning, Slurm-native."""
__version__ = "0.1.0"
