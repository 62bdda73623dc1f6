"""Which file names are photos: light enough for any process to import (lorad web checks a
dropped folder's names without loading the image libraries)."""

# Extensions listed as photos (compared in lower case). Pillow decides the real format by content.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".avif",
     ".gif", ".heic", ".heif", ".hif"}
)
