// Gzip: decompression of gzip data (RFC 1952, several members concatenated as `cat a.gz b.gz` makes them) through
// zlib, for data files and stdin recognized by their magic bytes (1f 8b), whatever their name. A truncated or
// corrupt stream is an error saying how much came out before it; the output is bounded (a small file can inflate
// to terabytes).
import CZlib
import Foundation

public struct GzipError: Error, CustomStringConvertible {
    public let reason: String
    /// The bytes decompressed before the failure (to name the line reached).
    public let produced: [UInt8]
    public var description: String { reason }
}

public enum Gzip {
    public static func isGzip(_ b: UnsafeRawBufferPointer) -> Bool { b.count >= 2 && b[0] == 0x1F && b[1] == 0x8B }

    /// Decompressed output at most this large: half the machine's memory.
    public static var defaultLimit: Int { max(1 << 30, Limits.physicalMemory / 2) }

    /// Every member of the gzip stream in `input`, decompressed; at most `limit` bytes of output.
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int = defaultLimit) throws -> [UInt8] {
        var strm = z_stream()
        guard inflateInit2_(&strm, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw GzipError(reason: "zlib could not start (out of memory)", produced: [])
        }
        defer { inflateEnd(&strm) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 18)
        let base = input.baseAddress.map { UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: Bytef.self)) }
        var fed = 0  // input bytes handed to zlib so far
        func feed() {
            let n = min(input.count - fed, 1 << 30)
            strm.next_in = base.map { $0 + fed }
            strm.avail_in = UInt32(n)
            fed += n
        }
        feed()
        while true {
            if strm.avail_in == 0 && fed < input.count { feed() }
            var rc: Int32 = Z_OK
            let produced = chunk.withUnsafeMutableBufferPointer { c -> Int in
                strm.next_out = c.baseAddress
                strm.avail_out = UInt32(c.count)
                rc = inflate(&strm, Z_NO_FLUSH)
                return c.count - Int(strm.avail_out)
            }
            out.append(contentsOf: chunk[..<produced])
            if out.count > limit {
                throw GzipError(reason: "decompresses to more than \(limit >> 20) MiB (half the memory); decompress it to a file first",
                                produced: out)
            }
            let left = Int(strm.avail_in) + (input.count - fed)
            switch rc {
            case Z_STREAM_END:
                if left == 0 { return out }
                // Another member follows (or padding): decode it too; trailing zero bytes end the stream.
                let rest = UnsafeRawBufferPointer(rebasing: input[(input.count - left)...])
                if rest.allSatisfy({ $0 == 0 }) { return out }
                inflateReset(&strm)
            case Z_OK:
                continue
            case Z_BUF_ERROR:
                if left == 0 && produced == 0 {
                    throw GzipError(reason: "the gzip data is truncated (it ends inside the compressed stream)", produced: out)
                }
            default:
                let msg = strm.msg.map { String(cString: $0) } ?? "error \(rc)"
                throw GzipError(reason: "the gzip data is corrupt (\(msg))", produced: out)
            }
        }
    }
}
