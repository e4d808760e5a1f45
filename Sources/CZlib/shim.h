// CZlib: zlib (Debian's zlib1g-dev), used only by LoRAFormats/Gzip.swift to read .gz data.
#include <zlib.h>
