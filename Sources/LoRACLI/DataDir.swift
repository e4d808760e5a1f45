// DataDir: `--data DIR` in mlx-lm's layout — DIR/train.jsonl, DIR/valid.jsonl, DIR/test.jsonl (each may also be
// .jsonl.gz or a .json array). lora-train trains on train and validates on valid (unless --valid says otherwise);
// lora-eval evaluates test.
import Foundation
import LoRAShared

public enum DataDir {
    public static func isDirectory(_ p: String) -> Bool {
        var d: ObjCBool = false
        return p != "-" && FileManager.default.fileExists(atPath: p, isDirectory: &d) && d.boolValue
    }

    /// DIR/NAME.jsonl, .jsonl.gz or .json, whichever exists (in that order), or nil.
    public static func split(_ dir: String, _ name: String) -> String? {
        let base = dir.hasSuffix("/") ? String(dir.dropLast()) : dir
        return ["jsonl", "jsonl.gz", "json"].map { "\(base)/\(name).\($0)" }.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// lora-train's data and validation paths: a folder gives its train split and (when --valid is not given) its
    /// valid split, if it has one.
    public static func forTraining(data: String, valid: String?) throws -> (data: String, valid: String?) {
        guard isDirectory(data) else { return (data, valid) }
        guard let train = split(data, "train") else {
            throw FileError.notFound(path: data + "/train.jsonl",
                                     hint: "--data DIR needs DIR/train.jsonl (mlx-lm's layout: train.jsonl, valid.jsonl, test.jsonl; .jsonl.gz or .json also)")
        }
        return (train, valid ?? split(data, "valid"))
    }

    /// lora-eval's data path: a folder gives its test split.
    public static func forEvaluation(data: String) throws -> String {
        guard isDirectory(data) else { return data }
        guard let test = split(data, "test") else {
            let other = split(data, "valid").map { "; to evaluate on the validation split pass --data \($0)" } ?? ""
            throw FileError.notFound(path: data + "/test.jsonl", hint: "--data DIR evaluates DIR/test.jsonl (mlx-lm's layout)\(other)")
        }
        return test
    }
}
