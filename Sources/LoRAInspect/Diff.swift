// Diff: per-tensor max absolute and max relative difference between two models (model dirs or safetensors files;
// 4-bit weights compared as their dequantized values) or two adapters (PEFT folders, single files, '-',
// checkpoints, runs), matched by name; names only on one side are listed. Streams in chunks, in Double.
import Foundation
import LoRAFormats
import LoRAQuant
import LoRAModel
import LoRATrain

enum DiffSide {
    case adapter(Adapter)
    case tensors(TensorSource)

    static func open(_ path: String) throws -> (DiffSide, String) {
        let t = try Inspector.recognize(path)
        switch t {
        case .model(let p): return (.tensors(.store(try ModelDir(path: p).weights)), "model")
        case .safetensors(let p): return (.tensors(.files([try SafetensorsFile(path: p)])), "safetensors")
        case .gguf(let p): throw InspectError.ggufUnsupported(path: p, action: "--diff")
        case .adapter(let p), .checkpoint(let p): return (.adapter(try Adapter.load(p)), t.kind == "adapter" ? "adapter" : "checkpoint")
        case .run(let p):
            if FileManager.default.fileExists(atPath: p + "/adapter_model.safetensors") { return (.adapter(try Adapter.load(p)), "run") }
            guard let c = Checkpoint.list(p).last else {
                throw InspectError.noTensor(path: p, tensor: "-", hint: "the run has neither a final adapter nor a checkpoint yet")
            }
            return (.adapter(try Adapter.load(c.path)), "run")
        }
    }

    var isAdapter: Bool { if case .adapter = self { return true }; return false }

    /// Comparable names: adapters as `<module>.lora_A.weight` / `.lora_B.weight`; a model's 4-bit statistics
    /// (`<weight>.absmax`, `.quant_map`, ...) are left out, their weight being compared dequantized.
    var names: [String] {
        switch self {
        case .adapter(let a):
            return a.moduleNames.flatMap { [$0 + ".lora_A.weight", $0 + ".lora_B.weight"] }
        case .tensors(.store(let s)):
            let packed = s.names.filter { $0.hasSuffix(".weight") && BnbWeight.stateTensorName($0, in: s) != nil }
            let prefixes = Set(packed.map { $0 + "." })
            return s.names.filter { n in
                guard let dot = n.range(of: ".weight.") else { return true }
                return !prefixes.contains(String(n[..<dot.lowerBound]) + ".weight.")
            }
        case .tensors(let src):
            return src.names
        }
    }

    /// The values and stored dtype of `name` (nil for a dtype without numbers).
    func values(_ name: String) throws -> (Values, String)? {
        switch self {
        case .adapter(let a):
            let isA = name.hasSuffix(".lora_A.weight")
            let m = String(name.dropLast(".lora_A.weight".count))
            guard let w = a.modules[m] else { return nil }
            return isA ? (.floats(w.a, shape: [w.r, w.inFeatures]), "F32") : (.floats(w.b, shape: [w.outFeatures, w.r]), "F32")
        case .tensors(let src):
            guard let (t, store) = src.find(name) else { return nil }
            if let s = store, BnbWeight.stateTensorName(name, in: s) != nil {
                let q = try BnbWeight(name: name, store: s)
                return (.fourBit(q), "4bit-" + q.state.quantType.rawValue)
            }
            guard Values.readable(t.dtype) else { return nil }
            return (.view(t), t.dtype.rawValue)
        }
    }
}

struct TensorDiff {
    var maxAbs = 0.0
    var maxRel = 0.0
    var differing = 0          // elements not equal
    var nonfiniteMismatch = 0  // elements where one side is NaN/Inf and the other is not the same
}

extension Inspector {
    /// |a − b| per element; relative difference |a − b| / max(|a|, |b|) (0 where both are 0).
    static func compare(_ a: Values, _ b: Values) -> TensorDiff {
        var d = TensorDiff()
        let n = a.count
        let cap = min(chunk, max(n, 1))
        let pa = UnsafeMutablePointer<Double>.allocate(capacity: cap), pb = UnsafeMutablePointer<Double>.allocate(capacity: cap)
        defer { pa.deallocate(); pb.deallocate() }
        var start = 0
        while start < n {
            let c = min(chunk, n - start)
            a.read(start: start, count: c, into: pa)
            b.read(start: start, count: c, into: pb)
            for i in 0..<c {
                let x = pa[i], y = pb[i]
                if x == y { continue }
                if x.isNaN && y.isNaN { continue }
                d.differing += 1
                if !x.isFinite || !y.isFinite { d.nonfiniteMismatch += 1; continue }
                let e = abs(x - y)
                if e > d.maxAbs { d.maxAbs = e }
                let r = e / max(abs(x), abs(y))
                if r > d.maxRel { d.maxRel = r }
            }
            start += c
        }
        return d
    }

    /// `--diff A B`.
    public static func diff(_ pathA: String, _ pathB: String) throws -> JSONValue {
        if pathA == "-" && pathB == "-" {
            throw UsageError("both A and B ask to read standard input ('-'); only one input per command can be '-'")
        }
        let (a, kindA) = try DiffSide.open(pathA)
        let (b, kindB) = try DiffSide.open(pathB)
        guard a.isAdapter == b.isAdapter else {
            throw InspectError.incomparable(a: pathA, aKind: kindA, b: pathB, bKind: kindB)
        }
        let namesA = a.names, namesB = b.names
        let setA = Set(namesA), setB = Set(namesB)
        var rows: [JSONValue] = []
        var shapeMismatch: [JSONValue] = []
        var unreadable: [JSONValue] = []
        var compared = 0, identical = 0
        var maxAbs = 0.0, maxRel = 0.0
        var maxAbsName: String? = nil, maxRelName: String? = nil
        var nonfinite = 0
        for n in namesA where setB.contains(n) {
            guard let (va, da) = try a.values(n), let (vb, db) = try b.values(n) else {
                unreadable.append(.string(n)); continue
            }
            guard va.shape == vb.shape else {
                shapeMismatch.append(.object(JSONObject([("name", .string(n)), ("shape_a", ints(va.shape)), ("shape_b", ints(vb.shape))])))
                continue
            }
            let d = compare(va, vb)
            compared += 1
            if d.differing == 0 { identical += 1 }
            nonfinite += d.nonfiniteMismatch
            if maxAbsName == nil || d.maxAbs > maxAbs { maxAbs = d.maxAbs; maxAbsName = n }
            if maxRelName == nil || d.maxRel > maxRel { maxRel = d.maxRel; maxRelName = n }
            var o = JSONObject()
            o["name"] = .string(n)
            o["dtype_a"] = .string(da)
            o["dtype_b"] = .string(db)
            o["max_abs_diff"] = .double(d.maxAbs)
            o["max_rel_diff"] = .double(d.maxRel)
            o["differing_elements"] = .int(Int64(d.differing))
            if d.nonfiniteMismatch > 0 { o["nonfinite_mismatches"] = .int(Int64(d.nonfiniteMismatch)) }
            rows.append(.object(o))
        }
        var o = JSONObject()
        o["kind"] = .string("diff")
        o["a"] = .string(pathA == "-" ? "<stdin>" : pathA)
        o["b"] = .string(pathB == "-" ? "<stdin>" : pathB)
        o["kind_a"] = .string(kindA)
        o["kind_b"] = .string(kindB)
        o["compared"] = .int(Int64(compared))
        o["identical"] = .int(Int64(identical))
        o["differing"] = .int(Int64(compared - identical))
        o["max_abs_diff"] = .double(maxAbs)
        o["max_abs_tensor"] = compared - identical > 0 ? maxAbsName.map { .string($0) } ?? .null : .null
        o["max_rel_diff"] = .double(maxRel)
        o["max_rel_tensor"] = compared - identical > 0 ? maxRelName.map { .string($0) } ?? .null : .null
        o["nonfinite_mismatches"] = .int(Int64(nonfinite))
        o["only_in_a"] = .array(namesA.filter { !setB.contains($0) }.map { .string($0) })
        o["only_in_b"] = .array(namesB.filter { !setA.contains($0) }.map { .string($0) })
        o["shape_mismatch"] = .array(shapeMismatch)
        if !unreadable.isEmpty { o["not_compared"] = .array(unreadable) }
        o["tensors"] = .array(rows)
        return .object(o)
    }
}
