// LoRAQuant: the bitsandbytes 4-bit codec (NF4/FP4, double quantization, the dynamic map) and the bnb tensor
// layout; it sees only the format layer (and the kernels through it).
@_exported import LoRAFormats
