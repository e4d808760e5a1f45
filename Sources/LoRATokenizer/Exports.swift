// LoRATokenizer sits on the format layer (JSON values, file errors, limits) and re-exports it to its users.
@_exported import LoRAFormats

extension TokenizerError: ToolError {}
extension ChatTemplateError: ToolError {}
