"""Every fact about each dataset of the sweep, one frozen entry per dataset (no torch import).

The grid validator, the launcher (a test-split size canonicalises `eval_limit`), the analysis and
the CLIs read these without paying for torch; `sweep.tasks.data` keys into them to load images.
Download URLs and MD5s are torchvision's (tests/test_download.py checks them against its tables),
so `python -m sweep.data download` fetches exactly the files torchvision would.

Each train split holds out `val_size` images as the validation split, which neither dense training
nor calibration ever sees (which ones: `sweep.tasks.datasets.holdout`). A sweep evaluates on one
of EVAL_SPLITS: "test" (the official test split; the `val` folder of the ImageNet-style datasets)
or "val" (the held-out train images, with test-time preprocessing).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from sweep.catalog.registry import Registry, named_registry

EVAL_SPLITS: tuple[str, ...] = ("test", "val")


@dataclass(frozen=True)
class Archive:
    """One file of an official release, with the MD5 of the official bytes."""

    url: str
    md5: str
    unpack: bool  # a tar archive to extract, or a file kept as downloaded

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Download:
    """What a download fetches (the files torchvision's `torchvision_class` fetches) and where
    the result lands: `folder`, relative to the data root, is the archives' top folder, or the
    folder kept files go to."""

    torchvision_class: str
    archives: tuple[Archive, ...]
    folder: str


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: model input, normalisation, split sizes, training defaults, where to get it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int  # square model input side
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    train_size: int  # images in the official train split
    val_size: int  # of those, held out as the validation split (sweep.tasks.datasets.holdout)
    test_size: int  # images in the official split reported as "test" (folder `test_folder`)
    test_folder: str  # "test", or "val" for the ImageNet-style folders
    stored_shape: tuple[int, ...] | None  # one image as stored (what synthetic files must hold);
    # None: image files of any size, resized and centre-cropped to `image_size` on load
    crop_padding: int | None  # training crop: zero padding of a random crop + flip;
    # None: RandomResizedCrop(image_size) + flip
    default_epochs: int  # dense training epochs of the default recipe
    download: Download | None  # None: no public download (a user provides the files)
    class_ids: tuple[str, ...] = ()  # sorted ImageNet wnids of the folder datasets

    def normalize(self, images_uint8: Any) -> Any:
        """uint8 torch tensor [..., C, H, W] -> float32 (x / 255 - mean) / std, on its device.

        Written against the tensor's own methods, so this module needs no torch import.
        """
        if str(images_uint8.dtype) != "torch.uint8":
            raise TypeError(f"normalize expects uint8 images, got {images_uint8.dtype}")
        scaled = images_uint8.float().div_(255)
        mean = scaled.new_tensor(self.mean).view(-1, 1, 1)
        std = scaled.new_tensor(self.std).view(-1, 1, 1)
        return scaled.sub_(mean).div_(std)


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
# The 100 classes of CMC's ImageNet-100 (Tian et al. 2019), shipped with the package.
_IMAGENET100_WNIDS = tuple(
    sorted(resources.files("sweep.tasks").joinpath("imagenet100_classes.txt").read_text().split())
)


def _cifar_download(torchvision_class: str, archive: str, md5: str, folder: str) -> Download:
    url = f"https://www.cs.toronto.edu/~kriz/{archive}"
    return Download(torchvision_class, (Archive(url, md5, unpack=True),), folder)


def _cifar(
    name: str,
    classes: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    archive: tuple[str, str, str, str],
) -> DatasetInfo:
    """CIFAR-10 and CIFAR-100 share every fact but classes, statistics and archive."""
    return DatasetInfo(
        name=name,
        num_classes=classes,
        in_channels=3,
        image_size=32,
        mean=mean,
        std=std,
        train_size=50000,
        val_size=5000,
        test_size=10000,
        test_folder="test",
        stored_shape=(3, 32, 32),
        crop_padding=4,
        default_epochs=30,
        download=_cifar_download(*archive),
    )


DATASETS: Registry[DatasetInfo] = named_registry(
    "dataset",
    (
        DatasetInfo(
            name="fashion_mnist",
            num_classes=10,
            in_channels=1,
            image_size=28,
            mean=(0.2860,),
            std=(0.3530,),
            train_size=60000,
            val_size=5000,
            test_size=10000,
            test_folder="test",
            stored_shape=(28, 28),
            crop_padding=2,
            default_epochs=4,  # the 2-core demo budget
            download=Download(
                "FashionMNIST",
                tuple(
                    Archive(_FASHION_URL + filename, md5, unpack=False)
                    for filename, md5 in (
                        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
                    )
                ),
                folder="FashionMNIST/raw",  # where torchvision puts them
            ),
        ),
        _cifar(
            "cifar10",
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            (
                "CIFAR10",
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py",
            ),
        ),
        _cifar(
            "cifar100",
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            (
                "CIFAR100",
                "cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
                "cifar-100-python",
            ),
        ),
        DatasetInfo(
            name="imagenette",
            num_classes=10,
            in_channels=3,
            image_size=224,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            train_size=9469,  # imagenette2 (the 2019 release), every size variant
            val_size=947,  # 10 %
            test_size=3925,
            test_folder="val",
            stored_shape=None,
            crop_padding=None,
            default_epochs=5,
            download=Download(
                "Imagenette",  # size="320px"
                (
                    Archive(
                        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
                        "3df6f0d01a2c9592104656642f5e78a3",
                        unpack=True,
                    ),
                ),
                folder="imagenette2-320",
            ),
            class_ids=_IMAGENETTE_WNIDS,
        ),
        DatasetInfo(
            name="imagenet100",
            num_classes=100,
            in_channels=3,
            image_size=224,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            train_size=126689,  # ImageNet-1k train images of the 100 classes
            val_size=12669,  # 10 %
            test_size=5000,  # 50 ImageNet-1k validation images per class
            test_folder="val",
            stored_shape=None,
            crop_padding=None,
            default_epochs=5,
            download=None,  # ImageNet's licence: a user provides the files
            class_ids=_IMAGENET100_WNIDS,
        ),
    ),
)
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
