// LoRAFormats sits on the kernels (fp16/bf16 conversion) and re-exports them to its users.
@_exported import LoRAKernels
