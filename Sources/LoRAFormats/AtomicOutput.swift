// AtomicOutput: files and folders are written under a temporary name in their destination folder and
// renamed into place only when complete, so an interrupted run never leaves a half-written output.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Temporary outputs in progress, removed if the process is interrupted (SIGINT/SIGTERM).
public final class PendingOutputs: @unchecked Sendable {
    public static let shared = PendingOutputs()
    private var paths = Set<String>()
    private let lock = NSLock()

    /// A path to delete if the run fails or is interrupted (a temporary file or folder, or an output folder this
    /// run created and has not yet put anything usable in).
    public func add(_ p: String) { lock.lock(); paths.insert(p); lock.unlock() }
    /// The path is final (or usable): keep it whatever happens next.
    public func remove(_ p: String) { lock.lock(); paths.remove(p); lock.unlock() }

    /// Deletes every output still pending; called on failure and on interruption.
    public func removeAll() {
        lock.lock(); let ps = paths; paths.removeAll(); lock.unlock()
        for p in ps { try? FileManager.default.removeItem(atPath: p) }
    }
}

/// Something bytes can be streamed into: a file being written, or standard output.
public protocol ByteSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

extension ByteSink {
    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }
    public func write(_ s: String) throws { try write(Array(s.utf8)) }
}

/// A buffered writer on a file descriptor.
public final class FDSink: ByteSink {
    let fd: Int32
    let name: String
    private var buffer: UnsafeMutableRawPointer
    private let capacity = 1 << 20
    private var used = 0

    init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    deinit { buffer.deallocate() }

    public static func standardOutput() -> FDSink { FDSink(fd: 1, name: "<stdout>") }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if used + bytes.count > capacity {
            try flush()
            if bytes.count >= capacity { try rawWrite(base, bytes.count); return }
        }
        (buffer + used).copyMemory(from: base, byteCount: bytes.count)
        used += bytes.count
    }

    public func flush() throws {
        if used > 0 { try rawWrite(buffer, used); used = 0 }
    }

    private func rawWrite(_ p: UnsafeRawPointer, _ n: Int) throws {
        var off = 0
        while off < n {
            let r = Glibc_write(fd, p + off, n - off)
            if r < 0 {
                if errno == EINTR { continue }
                throw FileError.cannotWrite(path: name, reason: errnoString())
            }
            off += r
        }
    }
}

@inline(__always) private func Glibc_write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, p, n)
    #else
    return Darwin.write(fd, p, n)
    #endif
}

/// A file written under `.<name>.tmp-<pid>-<n>` beside its final path; `commit()` renames it into place,
/// and dropping it uncommitted removes the temporary file.
public final class AtomicFile: ByteSink {
    public let path: String
    public let tempPath: String
    private let sink: FDSink
    private var done = false

    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        tempPath = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(AtomicFile.counter.next())"
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileError.cannotWrite(path: path, reason: errnoString()) }
        sink = FDSink(fd: fd, name: path)
        PendingOutputs.shared.add(tempPath)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        // Test hook: LORA_TEST_FAIL_WRITES=substring makes writes to matching paths fail as a full disk would.
        if let f = AtomicFile.failWrites, !f.isEmpty, path.contains(f) {
            abandon()
            throw FileError.cannotWrite(path: path, reason: "No space left on device (LORA_TEST_FAIL_WRITES)")
        }
        do { try sink.write(bytes) } catch { abandon(); throw error }
    }

    static let failWrites = ProcessInfo.processInfo.environment["LORA_TEST_FAIL_WRITES"]

    public func commit() throws {
        guard !done else { return }
        do {
            try sink.flush()
            guard fsync(sink.fd) == 0 else { throw FileError.cannotWrite(path: path, reason: errnoString()) }
        } catch { abandon(); throw error }
        close(sink.fd)
        done = true
        PendingOutputs.shared.remove(tempPath)
        guard rename(tempPath, path) == 0 else {
            let r = errnoString()
            unlink(tempPath)
            throw FileError.cannotWrite(path: path, reason: r)
        }
    }

    public func abandon() {
        guard !done else { return }
        done = true
        close(sink.fd)
        unlink(tempPath)
        PendingOutputs.shared.remove(tempPath)
    }

    deinit { abandon() }

    final class Counter: @unchecked Sendable {
        private var n = 0
        private let lock = NSLock()
        func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
    }
    static let counter = Counter()

    /// Writes a whole small file atomically.
    public static func write(_ text: String, to path: String) throws {
        let f = try AtomicFile(path: path)
        try f.write(text)
        try f.commit()
    }
}

/// A folder built under a temporary name beside its final path and renamed into place by `commit()`.
/// With `replace`, an existing folder at the final path is swapped out and removed only after the rename.
public final class AtomicDirectory {
    public let path: String
    public let tempPath: String
    private var done = false

    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue else {
            throw FileError.cannotWrite(path: path, reason: "parent folder \(parent) does not exist; create it first")
        }
        tempPath = parent + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(AtomicFile.counter.next())"
        guard mkdir(tempPath, 0o755) == 0 else { throw FileError.cannotWrite(path: path, reason: errnoString()) }
        PendingOutputs.shared.add(tempPath)
    }

    /// Path of a file inside the folder under construction.
    public func file(_ name: String) -> String { tempPath + "/" + name }

    public func commit(replace: Bool = false) throws {
        guard !done else { return }
        let fm = FileManager.default
        var old: String? = nil
        if fm.fileExists(atPath: path) {
            guard replace else {
                abandon()
                throw FileError.cannotWrite(path: path, reason: "already exists; choose another path or pass --force")
            }
            let aside = tempPath + ".old"
            guard rename(path, aside) == 0 else {
                let r = errnoString(); abandon()
                throw FileError.cannotWrite(path: path, reason: r)
            }
            old = aside
        }
        guard rename(tempPath, path) == 0 else {
            let r = errnoString()
            if let o = old { rename(o, path) }
            abandon()
            throw FileError.cannotWrite(path: path, reason: r)
        }
        done = true
        PendingOutputs.shared.remove(tempPath)
        if let o = old { try? fm.removeItem(atPath: o) }
    }

    public func abandon() {
        guard !done else { return }
        done = true
        try? FileManager.default.removeItem(atPath: tempPath)
        PendingOutputs.shared.remove(tempPath)
    }

    deinit { abandon() }
}
