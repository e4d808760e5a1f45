// LoRAShared: the library as the tools and tests see it, one import for every layer. Each layer is a module of its
// own, so the compiler keeps a lower one from importing a higher one (docs/architecture.md §2):
//   LoRAKernels (-Ounchecked) → LoRAFormats → LoRATokenizer, LoRAQuant → LoRAModel → LoRAConvert, LoRAEngine → LoRATrain.
// LoRAKernels is the only module built with -Ounchecked; everything from the format readers up keeps its bounds
// and overflow checks in release builds.
@_exported import LoRAKernels
@_exported import LoRAFormats
@_exported import LoRATokenizer
@_exported import LoRAQuant
@_exported import LoRAModel
@_exported import LoRAConvert
@_exported import LoRAEngine
@_exported import LoRATrain
