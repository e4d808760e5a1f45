// LoRATrain: JSONL rows → examples, evaluation windows, batching, AdamW, checkpoints and the training loop, on
// top of the engine.
@_exported import LoRAEngine
