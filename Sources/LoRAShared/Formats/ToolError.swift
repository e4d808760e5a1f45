// ToolError: the marker every library error adopts. Its description is the one-line message a user sees after
// `error: ` (what, where, and the fix); the executables print it and exit 1.

public protocol ToolError: Error, CustomStringConvertible {}

extension SafetensorsError: ToolError {}
extension FileError: ToolError {}
extension ConfigError: ToolError {}
extension WeightStoreError: ToolError {}
extension JSONParseError: ToolError {}
extension JSONLError: ToolError {}
extension ComputeError: ToolError {}
