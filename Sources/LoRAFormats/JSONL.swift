// JSONL: one JSON object per line, read from a file or standard input ("-"), every record keeping its
// 1-based line number so errors can name `file:line`. Blank lines are not records and are passed over. Gzip data
// (by its magic bytes, any name, stdin too) is decompressed first; a file that is one JSON array of objects
// (starts with '[') is read element by element, each named by the line it starts on.
import Foundation

public enum JSONLError: Error, CustomStringConvertible {
    case malformedLine(path: String, line: Int, reason: String)
    case empty(path: String)
    case gzip(path: String, reason: String, line: Int)

    public var description: String {
        switch self {
        case .malformedLine(let p, let l, let r): return "\(p):\(l): \(r)"
        case .empty(let p): return "\(p): no records (the file is empty or has only blank lines)"
        case .gzip(let p, let r, let l): return "\(p): \(r); decompressed up to line \(l)"
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
        guard Gzip.isGzip(file.bytes) else { return try parse(file.bytes, shown: shown, skipBad: skipBad) }
        let plain: [UInt8]
        do { plain = try Gzip.decompress(file.bytes) } catch let e as GzipError {
            throw JSONLError.gzip(path: shown, reason: e.reason, line: lineNumber(after: e.produced[...]))
        }
        return try plain.withUnsafeBytes { try parse($0, shown: shown, skipBad: skipBad) }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, shown: String, skipBad: Bool) throws -> JSONLFile {
        var records: [JSONLRecord] = []
        var skipped: [String] = []
        let parser = JSONParser()
        var start = 0, line = 0
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { start = 3 }  // a UTF-8 byte-order mark
        if let first = bytes[start...].firstIndex(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }), bytes[first] == 0x5B {
            return try parseArray(bytes, at: first, shown: shown, skipBad: skipBad)
        }
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

    /// The 1-based line that follows `bytes`: one more than the newlines in them.
    static func lineNumber<C: Collection>(after bytes: C) -> Int where C.Element == UInt8 {
        1 + bytes.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
    }

    /// A file holding one JSON array: each element a record, named by the line it starts on.
    static func parseArray(_ bytes: UnsafeRawBufferPointer, at open: Int, shown: String, skipBad: Bool) throws -> JSONLFile {
        func line(at offset: Int) -> Int { lineNumber(after: bytes[..<min(offset, bytes.count)]) }
        let v: JSONValue
        do { v = try JSONParser().parse(UnsafeRawBufferPointer(rebasing: bytes[open...])) } catch let j as JSONParseError {
            throw JSONLError.malformedLine(path: shown, line: line(at: open + j.offset),
                reason: "the file is a JSON array (it starts with '['), and not valid JSON: \(j.message); fix it, or give JSON Lines (one object per line: jq -c '.[]' FILE)")
        }
        guard let items = v.arrayValue else { throw JSONLError.empty(path: shown) }
        let lines = elementLines(bytes, open: open)
        var records: [JSONLRecord] = [], skipped: [String] = []
        for (k, item) in items.enumerated() {
            let l = k < lines.count ? lines[k] : line(at: open)
            guard let o = item.objectValue else {
                let reason = "element \(k + 1) of the JSON array is a \(item.typeName), not an object"
                if skipBad { skipped.append("\(shown):\(l): \(reason)"); continue }
                throw JSONLError.malformedLine(path: shown, line: l, reason: reason + " (fix it or pass --skip-bad-lines)")
            }
            records.append(JSONLRecord(line: l, value: o))
        }
        if records.isEmpty && skipped.isEmpty { throw JSONLError.empty(path: shown) }
        return JSONLFile(path: shown, records: records, skipped: skipped)
    }

    /// The line each top-level element of the array opening at `open` starts on (the array is valid JSON).
    static func elementLines(_ b: UnsafeRawBufferPointer, open: Int) -> [Int] {
        var line = lineNumber(after: b[..<open])
        var lines: [Int] = [], depth = 0, inString = false, escaped = false, expectValue = false
        for i in open..<b.count {
            let c = b[i]
            if c == 0x0A { line += 1 }
            if inString {
                if escaped { escaped = false } else if c == 0x5C { escaped = true } else if c == 0x22 { inString = false }
                continue
            }
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case 0x2C: if depth == 1 { expectValue = true }; continue  // ,
            case 0x5D, 0x7D:  // ] }
                depth -= 1
                if depth == 0 { return lines }
                continue
            default: break
            }
            if depth == 1 && expectValue { lines.append(line); expectValue = false }
            if c == 0x22 { inString = true } else if c == 0x5B || c == 0x7B {
                depth += 1
                if depth == 1 { expectValue = true }
            }
        }
        return lines
    }
}
