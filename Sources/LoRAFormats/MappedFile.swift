// MappedFile: read-only bytes of a file, memory-mapped (or read whole from a pipe such as stdin),
// kept alive by reference so tensor views into it stay valid.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

public enum FileError: Error, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case cannotRead(path: String, reason: String)
    case cannotWrite(path: String, reason: String)
    case notFound(path: String, hint: String)

    public var description: String {
        switch self {
        case .cannotOpen(let p, let r): return "\(p): cannot open: \(r)"
        case .cannotRead(let p, let r): return "\(p): cannot read: \(r)"
        case .cannotWrite(let p, let r): return "\(p): cannot write: \(r)"
        case .notFound(let p, let h): return "\(p): not found\(h.isEmpty ? "" : "; \(h)")"
        }
    }
}

func errnoString() -> String { String(cString: strerror(errno)) }

public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    private let mapped: Bool

    /// Maps a regular file read-only. A FIFO or other non-seekable file is read into memory instead.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw FileError.notFound(path: path, hint: "") }
            throw FileError.cannotOpen(path: path, reason: errnoString())
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError.cannotRead(path: path, reason: errnoString()) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw FileError.cannotRead(path: path, reason: "is a directory")
        }
        if (st.st_mode & S_IFMT) == S_IFREG {
            let size = Int(st.st_size)
            if size == 0 {
                bytes = UnsafeRawBufferPointer(start: nil, count: 0)
                mapped = false
                return
            }
            guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
                throw FileError.cannotRead(path: path, reason: "mmap failed: \(errnoString())")
            }
            bytes = UnsafeRawBufferPointer(start: p, count: size)
            mapped = true
        } else {
            let data = try MappedFile.readAll(fd: fd, path: path)
            bytes = data
            mapped = false
        }
    }

    /// Reads all of standard input (for `-` arguments).
    public init(stdinNamed name: String = "<stdin>") throws {
        path = name
        bytes = try MappedFile.readAll(fd: 0, path: name)
        mapped = false
    }

    /// Wraps bytes already in memory (tests, generated data).
    public init(bytes source: [UInt8], name: String) {
        path = name
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, source.count), alignment: 64)
        source.withUnsafeBytes { if let b = $0.baseAddress { p.baseAddress!.copyMemory(from: b, byteCount: source.count) } }
        bytes = UnsafeRawBufferPointer(start: p.baseAddress, count: source.count)
        mapped = false
    }

    private static func readAll(fd: Int32, path: String) throws -> UnsafeRawBufferPointer {
        var cap = 1 << 20
        var buf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
        var len = 0
        while true {
            if len == cap {
                let nb = UnsafeMutableRawPointer.allocate(byteCount: cap * 2, alignment: 64)
                nb.copyMemory(from: buf, byteCount: len)
                buf.deallocate()
                buf = nb
                cap *= 2
            }
            let r = read(fd, buf + len, cap - len)
            if r < 0 {
                if errno == EINTR { continue }
                buf.deallocate()
                throw FileError.cannotRead(path: path, reason: errnoString())
            }
            if r == 0 { break }
            len += r
        }
        return UnsafeRawBufferPointer(start: buf, count: len)
    }

    deinit {
        if mapped {
            munmap(UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count)
        } else if let b = bytes.baseAddress {
            b.deallocate()
        }
    }
}
