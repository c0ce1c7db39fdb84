"""A folder of images read as torchvision's ImageFolder reads it, but safely: regular files only, no symlink loop.

A folder someone else filled (``evaluate --images``, ``data.dataset: image_folder``) may hold a FIFO named
``x.png`` (opening it blocks for ever), or two symlinks that form a loop (torchvision walks with
``followlinks=True``, and the walk never ends). Here only regular image files are read, and no symlinked folder
below the class folders is followed.
"""
import os
import stat

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension


def regular_image(path: str) -> bool:
    """An image file by its extension that is a regular file (a symlink to one counts): never a FIFO, a device or
    a folder."""
    try:
        return has_file_allowed_extension(path, IMG_EXTENSIONS) and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # a dangling or looping symlink
        return False


class RegularImageFolder(ImageFolder):
    """torchvision's ImageFolder over regular image files only, walking no symlinked folder below its classes."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        samples = []
        for name, index in sorted(class_to_idx.items(), key=lambda item: item[1]):
            for root, _, files in sorted(os.walk(os.path.join(directory, name), followlinks=False)):
                samples += [(os.path.join(root, f), index) for f in sorted(files)
                            if regular_image(os.path.join(root, f))]
        if not samples and not allow_empty:
            raise FileNotFoundError(f"no regular image files in the class folders of {directory}")
        return samples
