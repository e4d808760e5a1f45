// LoRAConvert: model folder → model folder, one tensor at a time: lora-quantize's ModelQuantizer and lora-merge's
// ModelMerger; it sees the model and adapter layer and what is below it, never the engine.
@_exported import LoRAModel
