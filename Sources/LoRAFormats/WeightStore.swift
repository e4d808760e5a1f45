// WeightStore: the tensors of a Hugging Face model dir, from one model.safetensors or from shards named by
// model.safetensors.index.json ({"metadata": {...}, "weight_map": {tensor: file}}); and the sharded writer.
import Foundation

public enum WeightStoreError: Error, CustomStringConvertible {
    case noWeights(dir: String, found: [String])
    case badIndex(path: String, reason: String)
    case missingShard(index: String, shard: String, tensor: String)
    case shardMismatch(index: String, tensor: String, shard: String)
    case duplicateTensor(tensor: String, files: [String])

    public var description: String {
        switch self {
        case .noWeights(let d, let found):
            let bins = found.filter { $0.hasSuffix(".bin") || $0.hasSuffix(".pt") || $0.hasSuffix(".gguf") }
            let hint = bins.isEmpty
                ? "expected model.safetensors or model.safetensors.index.json"
                : "found \(bins.joined(separator: ", ")), which is not read; save the model with safetensors (save_pretrained(..., safe_serialization=True))"
            return "\(d): no safetensors weights; \(hint)"
        case .badIndex(let p, let r): return "\(p): invalid index: \(r)"
        case .missingShard(let i, let s, let t):
            return "\(i): names shard '\(s)' (for tensor '\(t)') that does not exist; the download is incomplete"
        case .shardMismatch(let i, let t, let s):
            return "\(i): maps tensor '\(t)' to '\(s)', which does not contain it; the index and shards disagree"
        case .duplicateTensor(let t, let f):
            return "tensor '\(t)' appears in several files (\(f.joined(separator: ", ")))"
        }
    }
}

public final class WeightStore: @unchecked Sendable {
    public let directory: String
    public let files: [SafetensorsFile]
    private let location: [String: Int]
    /// All tensor names, sorted.
    public let names: [String]

    public init(directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        let single = directory + "/model.safetensors"
        let indexPath = directory + "/model.safetensors.index.json"
        var files: [SafetensorsFile] = []
        var location: [String: Int] = [:]
        if fm.fileExists(atPath: indexPath) {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: indexPath)) } catch {
                throw FileError.cannotRead(path: indexPath, reason: error.localizedDescription)
            }
            let json: JSONValue
            do { json = try JSONParser().parse(data) } catch {
                throw WeightStoreError.badIndex(path: indexPath, reason: "\(error)")
            }
            guard let map = json["weight_map"]?.objectValue else {
                throw WeightStoreError.badIndex(path: indexPath, reason: "no \"weight_map\" object")
            }
            var shardIndex: [String: Int] = [:]
            for (tensor, v) in map.entries {
                guard let shard = v.stringValue, !shard.contains("/"), !shard.isEmpty else {
                    throw WeightStoreError.badIndex(path: indexPath, reason: "weight_map entry for '\(tensor)' is not a plain file name")
                }
                let i: Int
                if let k = shardIndex[shard] {
                    i = k
                } else {
                    let p = directory + "/" + shard
                    guard fm.fileExists(atPath: p) else {
                        throw WeightStoreError.missingShard(index: indexPath, shard: shard, tensor: tensor)
                    }
                    files.append(try SafetensorsFile(path: p))
                    i = files.count - 1
                    shardIndex[shard] = i
                }
                guard files[i].contains(tensor) else {
                    throw WeightStoreError.shardMismatch(index: indexPath, tensor: tensor, shard: shard)
                }
                location[tensor] = i
            }
            // Tensors present in a shard but absent from the index are still part of the model.
            for (i, f) in files.enumerated() {
                for n in f.names where location[n] == nil { location[n] = i }
            }
        } else if fm.fileExists(atPath: single) {
            files = [try SafetensorsFile(path: single)]
            for n in files[0].names { location[n] = 0 }
        } else {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
                throw FileError.notFound(path: directory, hint: "expected a Hugging Face model folder")
            }
            let listing = (try? fm.contentsOfDirectory(atPath: directory)) ?? []
            throw WeightStoreError.noWeights(dir: directory, found: listing.sorted())
        }
        self.files = files
        self.location = location
        self.names = location.keys.sorted()
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    public func tensor(_ name: String) throws -> TensorView {
        guard let i = location[name] else {
            throw SafetensorsError.missingTensor(path: directory, tensor: name)
        }
        return try files[i].tensor(name)
    }

    public func info(_ name: String) -> (dtype: DType, shape: [Int])? {
        location[name].flatMap { files[$0].info(name) }
    }

    /// Total bytes of tensor data.
    public var dataBytes: Int {
        names.reduce(0) { acc, n in
            let i = info(n)!
            return acc + (checkedNumel(i.shape) ?? 0) * i.dtype.size
        }
    }
}

public enum ShardedWriter {
    /// Parses "5GB", "500MB", "2GiB", "1000000" into bytes (decimal units as transformers: GB = 10^9).
    public static func parseSize(_ s: String) -> Int? {
        let t = s.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int)] = [("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                                      ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1)]
        for (u, m) in units where t.hasSuffix(u) {
            guard let v = Double(t.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v > 0 else { return nil }
            return Int(v * Double(m))
        }
        guard let v = Int(t), v > 0 else { return nil }
        return v
    }

    /// Splits records into shards of at most `maxShardSize` data bytes (a single larger tensor gets its own
    /// shard), as transformers does, keeping the given order.
    public static func plan(_ records: [TensorRecord], maxShardSize: Int) -> [[TensorRecord]] {
        var shards: [[TensorRecord]] = [[]]
        var size = 0
        for r in records {
            if size + r.byteCount > maxShardSize && !shards[shards.count - 1].isEmpty {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(r)
            size += r.byteCount
        }
        return shards
    }

    /// Writes `model.safetensors`, or `model-0000i-of-0000K.safetensors` shards plus
    /// `model.safetensors.index.json`, into `dir` (each file atomically). Returns the file names written.
    @discardableResult
    public static func write(_ records: [TensorRecord], metadata: [String: String] = [:], to dir: String,
                             maxShardSize: Int, canonical: Bool = true) throws -> [String] {
        let shards = plan(records, maxShardSize: maxShardSize)
        if shards.count == 1 {
            try SafetensorsWriter.write(records, metadata: metadata, toFile: dir + "/model.safetensors", canonical: canonical)
            return ["model.safetensors"]
        }
        var names: [String] = []
        var weightMap = JSONObject()
        for (i, shard) in shards.enumerated() {
            let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            try SafetensorsWriter.write(shard, metadata: metadata, toFile: dir + "/" + name, canonical: canonical)
            for r in shard { weightMap[r.name] = .string(name) }
            names.append(name)
        }
        let index = JSONValue.object(JSONObject([
            ("metadata", .object(JSONObject([("total_size", .int(Int64(SafetensorsWriter.dataSize(records))))]))),
            ("weight_map", .object(weightMap)),
        ]))
        try AtomicFile.write(index.serialized(.indented(2), sortKeys: true) + "\n", to: dir + "/model.safetensors.index.json")
        return names + ["model.safetensors.index.json"]
    }
}
