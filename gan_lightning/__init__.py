"""gan_lightning: adversarial generative models with inference, on PyTorch Lightning."""
__version__ = "0.1.0"
__all__ = ["load_pretrained"]


def __getattr__(name: str):
    """``gan_lightning.load_pretrained``, imported when first used (it brings torch and huggingface_hub)."""
    if name == "load_pretrained":
        from gan_lightning.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'gan_lightning' has no attribute {name!r}")
