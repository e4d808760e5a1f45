// TokenizerConfig: what tokenizer_config.json (and special_tokens_map.json, chat_template.jinja) add to tokenizer.json:
// the BOS/EOS/PAD/UNK token strings and the chat template, read the way transformers' from_pretrained reads them.
import Foundation

struct TokenizerConfig {
    static let specialKeys = ["bos_token", "eos_token", "pad_token", "unk_token"]

    /// Per key: absent (no entry), explicitly none (null), or the token string.
    var specials: [String: String?] = [:]
    var chatTemplate: String?
    /// The template named "tool_use" of a named-template list, which transformers renders instead of the default one
    /// when tools are passed.
    var toolUseTemplate: String?

    /// Reads the optional files of a model folder; any of them may be missing.
    static func load(directory: String) throws -> TokenizerConfig {
        func read(_ name: String) throws -> Data? {
            let p = directory + "/" + name
            guard FileManager.default.fileExists(atPath: p) else { return nil }
            do { return try Data(contentsOf: URL(fileURLWithPath: p)) } catch {
                throw TokenizerError.cannotRead(path: p, reason: error.localizedDescription)
            }
        }
        var jinja: String?
        if let d = try read("chat_template.jinja") {
            guard let s = String(data: d, encoding: .utf8) else {
                throw TokenizerError.cannotRead(path: directory + "/chat_template.jinja", reason: "not UTF-8 text")
            }
            jinja = s
        }
        return try parse(config: try read("tokenizer_config.json"), configPath: directory + "/tokenizer_config.json",
                         specialTokensMap: try read("special_tokens_map.json"),
                         mapPath: directory + "/special_tokens_map.json", chatTemplateFile: jinja)
    }

    package static func parse(config: Data?, configPath: String, specialTokensMap: Data? = nil, mapPath: String = "special_tokens_map.json",
                      chatTemplateFile: String? = nil) throws -> TokenizerConfig {
        var c = TokenizerConfig()
        // special_tokens_map.json first; tokenizer_config.json entries replace its ones.
        for (data, path) in [(specialTokensMap, mapPath), (config, configPath)] {
            guard let data else { continue }
            let o = try object(data, path: path)
            for k in specialKeys {
                guard let v = o[k] else { continue }
                c.specials[k] = try token(v, path: path, key: k)
            }
            if path == configPath, let t = o["chat_template"] {
                c.chatTemplate = try template(t, path: path)
                c.toolUseTemplate = try template(t, path: path, name: "tool_use")
            }
        }
        if let j = chatTemplateFile { c.chatTemplate = j }  // transformers prefers the separate file
        return c
    }

    static func object(_ data: Data, path: String) throws -> JSONObject {
        let v: JSONValue
        do { v = try JSONParser().parse(data) } catch { throw TokenizerError.invalidJSON(path: path, reason: "\(error)") }
        guard case .object(let o) = v else {
            throw TokenizerError.invalidJSON(path: path, reason: "top level is a \(v.typeName), not an object")
        }
        return o
    }

    /// A special token entry: "text", {"content": "text", ...} (an AddedToken), or null.
    static func token(_ v: JSONValue, path: String, key: String) throws -> String? {
        switch v {
        case .null: return nil
        case .string(let s): return s
        case .object(let o):
            guard let s = o["content"]?.stringValue else {
                throw TokenizerError.badValue(path: path, key: key, reason: "an object needs a \"content\" string")
            }
            return s
        default:
            throw TokenizerError.badValue(path: path, key: key, reason: "expected a string, {\"content\": ...} or null, got a \(v.typeName)")
        }
    }

    /// chat_template: a string, or a list of {"name", "template"} from which `name` ("default") is taken. A plain
    /// string is the default template and has no other names.
    static func template(_ v: JSONValue, path: String, name wanted: String = "default") throws -> String? {
        switch v {
        case .null: return nil
        case .string(let s): return wanted == "default" ? s : nil
        case .array(let list):
            for (i, e) in list.enumerated() {
                guard let name = e["name"]?.stringValue, let t = e["template"]?.stringValue else {
                    throw TokenizerError.badValue(path: path, key: "chat_template[\(i)]", reason: "expected {\"name\": ..., \"template\": ...}")
                }
                if name == wanted { return t }
            }
            return nil
        default:
            throw TokenizerError.badValue(path: path, key: "chat_template", reason: "expected a string or a list of named templates")
        }
    }
}
