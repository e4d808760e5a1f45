// LoRAModel: a model folder (config, weights, Linear modules, validated whole), a frozen weight in its stored form
// (LinearWeight), and PEFT adapters (LoRAConfig, Adapter); it sees the 4-bit codec and the formats below it.
@_exported import LoRAQuant
