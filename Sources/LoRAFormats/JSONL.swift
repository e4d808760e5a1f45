// JSONL: one JSON object per line, read from a file or standard input ("-"), every record keeping its
// 1-based line number so errors can name `file:line`. Blank lines are not records and are passed over.
import Foundation

public enum JSONLError: Error, CustomStringConvertible {
    case malformedLine(path: String, line: Int, reason: String)
    case empty(path: String)

    public var description: String {
        switch self {
        case .malformedLine(let p, let l, let r): return "\(p):\(l): \(r)"
        case .empty(let p): return "\(p): no records (the file is empty or has only blank lines)"
        }
    }
}

public struct JSONLRecord: Sendable {
    public let line: Int
    public let value: JSONObject
    public init(line: Int, value: JSONObject) {
        self.line = line
        self.value = value
    }
}

public struct JSONLFile: Sendable {
    public let path: String
    public let records: [JSONLRecord]
    /// Lines that failed to parse, when reading with `skipBad` (each as "path:line: reason").
    public let skipped: [String]

    /// Reads all records. A line that is not a JSON object is an error naming the line, unless `skipBad`.
    public static func read(_ path: String, skipBad: Bool = false, name: String? = nil) throws -> JSONLFile {
        let file: MappedFile
        if path == "-" {
            try StdinClaim.shared.claim(name ?? "the data")
            file = try MappedFile(stdinNamed: "<stdin>")
        } else {
            file = try MappedFile(path: path)
        }
        let shown = path == "-" ? "<stdin>" : path
        var records: [JSONLRecord] = []
        var skipped: [String] = []
        let bytes = file.bytes
        let parser = JSONParser()
        var start = 0, line = 0
        while start < bytes.count {
            line += 1
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            var e = end
            if e > start && bytes[e - 1] == 0x0D { e -= 1 }  // CRLF
            let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<e])
            start = end + 1
            if slice.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            do {
                let v = try parser.parse(slice)
                guard case .object(let o) = v else {
                    throw JSONLError.malformedLine(path: shown, line: line, reason: "expected a JSON object, found a \(v.typeName)")
                }
                records.append(JSONLRecord(line: line, value: o))
            } catch let err {
                let reason: String
                if let j = err as? JSONParseError { reason = "invalid JSON: \(j.message) at column \(j.offset + 1)" }
                else if case JSONLError.malformedLine(_, _, let r) = err { reason = r }
                else { reason = "\(err)" }
                if skipBad { skipped.append("\(shown):\(line): \(reason)"); continue }
                throw JSONLError.malformedLine(path: shown, line: line, reason: reason + " (fix the line or pass --skip-bad-lines)")
            }
        }
        if records.isEmpty && skipped.isEmpty { throw JSONLError.empty(path: shown) }
        return JSONLFile(path: shown, records: records, skipped: skipped)
    }
}
