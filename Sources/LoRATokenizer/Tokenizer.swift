// Tokenizer: a Hugging Face tokenizer.json (BPE) with its tokenizer_config.json: encode and decode equal to the
// tokenizers crate's Tokenizer::encode / decode (added tokens → normalizer → pre-tokenizer → BPE → post-processor).
import Foundation

/// Buffers and the word cache of one encode call; the tokenizer keeps one to reuse when no other call holds it.
final class EncodeState {
    var words = Words()
    var scan = ScanScratch()
    var bpe = BPEScratch()
    var pieces: [Int] = []
    var mapped: [UInt8] = []
    var ids: [Int32] = []
    var cache = ByteKeyMap(capacity: 4096)  // word bytes → (offset, count) in cacheIds
    var cacheIds: [Int32] = []

    /// Drops buffers a very long text grew, so a kept state does not hold them (the word cache stays).
    func trim() {
        guard words.spans.capacity > 1 << 20 || words.bytes.capacity > 1 << 24 || ids.capacity > 1 << 20 else { return }
        words = Words()
        scan = ScanScratch()
        bpe = BPEScratch()
        pieces = []
        ids = []
    }

    static let maxCachedWordBytes = 256
    static let maxCacheEntries = 200_000
    static let maxCacheKeyBytes = 16 << 20
}

public final class Tokenizer: @unchecked Sendable {
    /// The tokenizer.json this was read from (for messages).
    public let path: String
    public let addedTokens: [AddedToken]
    /// Distinct tokens of the model vocab and the added tokens (tokenizers' get_vocab_size(with_added_tokens=True)).
    public let vocabSize: Int
    public let bosToken: String?, eosToken: String?, padToken: String?, unkToken: String?
    public let bosTokenId: Int?, eosTokenId: Int?, padTokenId: Int?, unkTokenId: Int?
    /// Jinja source of the chat template (chat_template.jinja, else tokenizer_config.json's default one).
    public let chatTemplate: String?
    /// The chat template named "tool_use", when tokenizer_config.json has a list of named templates with one:
    /// transformers renders it instead of the default one for a conversation with tools.
    public let toolUseChatTemplate: String?
    /// encode(…, addSpecialTokens: true) starts with BOS / ends with EOS: what the post-processor does.
    public let addBosToken: Bool, addEosToken: Bool

    package let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let postProcessor: PostProcessor?
    let decoder: Decoder?
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let addedById: [Int: String]
    private let addedByContent: ByteKeyMap  // exact bytes, like every token lookup here
    private let specialContents: ByteKeyMap
    private let stateLock = NSLock()
    private let sharedState = EncodeState()

    /// Reads `tokenizer.json` of a model folder, with `tokenizer_config.json`, `special_tokens_map.json` and
    /// `chat_template.jinja` when present.
    public static func load(directory: String) throws -> Tokenizer {
        let path = directory + "/tokenizer.json"
        guard FileManager.default.fileExists(atPath: path) else { throw TokenizerError.missing(path: path) }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw TokenizerError.cannotRead(path: path, reason: error.localizedDescription)
        }
        return try Tokenizer(tokenizerJSON: data, path: path, config: try TokenizerConfig.load(directory: directory))
    }

    /// From the bytes of a tokenizer.json (and optionally of a tokenizer_config.json).
    public convenience init(tokenizerJSON: Data, path: String = "tokenizer.json", tokenizerConfig: Data? = nil,
                            configPath: String = "tokenizer_config.json") throws {
        try self.init(tokenizerJSON: tokenizerJSON, path: path,
                      config: try TokenizerConfig.parse(config: tokenizerConfig, configPath: configPath))
    }

    init(tokenizerJSON: Data, path: String, config: TokenizerConfig) throws {
        self.path = path
        let top = try TokenizerJSON(.object(try TokenizerConfig.object(tokenizerJSON, path: path)), path: path, keyPath: "")
        func optional<T>(_ k: String, _ parse: (TokenizerJSON) throws -> T) throws -> T? {
            top.has(k) ? try parse(try top.child(k)) : nil
        }
        model = try BPEModel(try top.child("model"))
        normalizer = try optional("normalizer", Normalizer.parse)
        preTokenizer = try optional("pre_tokenizer", PreTokenizer.parse)
        postProcessor = try optional("post_processor", PostProcessor.parse)
        decoder = try optional("decoder", Decoder.parse)

        let added = top.has("added_tokens") ? try top.children("added_tokens").map(AddedToken.parse) : []
        addedTokens = added
        var raw = AddedTokenMatcher(), normalized = AddedTokenMatcher()
        var byId: [Int: String] = [:], byContent = ByteKeyMap(), specials = ByteKeyMap()
        var extra = 0  // added tokens not in the model vocab
        for t in added where !t.content.isEmpty {
            byId[t.id] = t.content
            let content = Array(t.content.utf8)
            if byContent.find(content) == nil && model.vocabBytes.find(content) == nil { extra += 1 }
            byContent.insert(content, Int32(t.id))
            if t.special { specials.insert(content, 1) }
            if t.normalized {
                var failure: TokenizerError?
                normalized.add(t, pattern: normalizer?.apply(content, &failure) ?? content)
                if let failure { throw failure }
            } else {
                raw.add(t, pattern: content)
            }
        }
        rawMatcher = raw
        normalizedMatcher = normalized
        addedById = byId
        addedByContent = byContent
        specialContents = specials
        vocabSize = model.vocabCount + extra

        // Special tokens: tokenizer_config.json, else the post-processor's and the model's own.
        let around: (before: [String], after: [String]) = postProcessor?.surroundingSpecials ?? ([], [])
        func special(_ key: String, _ fallback: String?) -> String? {
            if let v = config.specials[key] { return v }
            return fallback
        }
        bosToken = special("bos_token", around.before.first)
        eosToken = special("eos_token", around.after.last)
        padToken = special("pad_token", nil)
        unkToken = special("unk_token", model.unkToken)
        chatTemplate = config.chatTemplate
        toolUseChatTemplate = config.toolUseTemplate
        let vocab = model.vocabBytes
        let lookup = { (t: String?) -> Int? in
            t.flatMap { byContent.find(Array($0.utf8)) ?? vocab.find(Array($0.utf8)) }.map { Int($0.0) }
        }
        bosTokenId = lookup(bosToken)
        eosTokenId = lookup(eosToken)
        padTokenId = lookup(padToken)
        unkTokenId = lookup(unkToken)
        let wrapped = postProcessor?.process([], addSpecialTokens: true) ?? []
        addBosToken = bosTokenId != nil && wrapped.first == bosTokenId
        addEosToken = eosTokenId != nil && wrapped.last == eosTokenId
    }

    // MARK: lookups

    public func tokenToId(_ token: String) -> Int? {
        let b = Array(token.utf8)
        return (addedByContent.find(b) ?? model.vocabBytes.find(b)).map { Int($0.0) }
    }

    public func idToToken(_ id: Int) -> String? {
        if let t = addedById[id] { return t }
        return id >= 0 && id < model.idToToken.count ? model.idToToken[id] : nil
    }

    public func isSpecialToken(_ id: Int) -> Bool { addedById[id].map { specialContents.find(Array($0.utf8)) != nil } ?? false }

    // MARK: encode

    /// Token ids of `text`. A piece a regex of the file cannot split within its limits (SplitPattern.icuSeconds,
    /// a malicious or broken tokenizer.json) is left unsplit; `encodeChecked` reports that instead.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        run(text, addSpecialTokens).ids
    }

    /// `encode`, failing with TokenizerError.regexLimit where a regex of the file ran past its limits.
    public func encodeChecked(_ text: String, addSpecialTokens: Bool = true) throws -> [Int] {
        let (ids, failure) = run(text, addSpecialTokens)
        if let failure { throw failure }
        return ids
    }

    private func run(_ text: String, _ addSpecialTokens: Bool) -> (ids: [Int], failure: TokenizerError?) {
        let locked = stateLock.try()
        defer { if locked { stateLock.unlock() } }
        let state = locked ? sharedState : EncodeState()
        splitAndNormalize(text, state)
        preTokenizer?.apply(&state.words, &state.scan)
        let failure = state.scan.regexFailure
        state.scan.regexFailure = nil
        runModel(state)
        let ids = state.ids.map { Int($0) }
        state.trim()
        return (postProcessor?.process(ids, addSpecialTokens: addSpecialTokens) ?? ids, failure)
    }

    /// The words the model sees, for tests: added tokens, normalizer and pre-tokenizer applied.
    package func preTokenize(_ text: String) -> [String] {
        let state = EncodeState()
        splitAndNormalize(text, state)
        preTokenizer?.apply(&state.words, &state.scan)
        return state.words.strings()
    }

    /// Added tokens found on the raw text, the normalizer run on the rest, then normalized added tokens found there.
    private func splitAndNormalize(_ text: String, _ s: EncodeState) {
        var raw = Array(text.utf8)
        s.pieces.removeAll(keepingCapacity: true)
        s.words.spans.removeAll(keepingCapacity: true)
        s.words.byteLevel = false
        raw.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress, b.count > 0 else { return }
            if rawMatcher.isEmpty { s.pieces += [0, b.count, -1] } else { rawMatcher.split(base, b.count, into: &s.pieces) }
        }
        if normalizer == nil && normalizedMatcher.isEmpty {
            for k in stride(from: 0, to: s.pieces.count, by: 3) {
                s.words.spans.append(.init(start: s.pieces[k], end: s.pieces[k + 1], token: s.pieces[k + 2], first: s.pieces[k] == 0))
            }
            swap(&s.words.bytes, &raw)
            return
        }
        s.words.bytes.removeAll(keepingCapacity: true)
        var sub: [Int] = []
        for k in stride(from: 0, to: s.pieces.count, by: 3) {
            let (start, end, token) = (s.pieces[k], s.pieces[k + 1], s.pieces[k + 2])
            if token >= 0 { s.words.spans.append(.init(start: 0, end: 0, token: token, first: false)); continue }
            let seg = normalizer?.apply(Array(raw[start..<end]), &s.scan.regexFailure) ?? Array(raw[start..<end])
            guard !seg.isEmpty else { continue }
            let base = s.words.bytes.count
            s.words.bytes += seg
            sub.removeAll(keepingCapacity: true)
            if normalizedMatcher.isEmpty { sub += [0, seg.count, -1] } else {
                seg.withUnsafeBufferPointer { normalizedMatcher.split($0.baseAddress!, $0.count, into: &sub) }
            }
            for q in stride(from: 0, to: sub.count, by: 3) {
                s.words.spans.append(.init(start: base + sub[q], end: base + sub[q + 1], token: sub[q + 2],
                                           first: start == 0 && sub[q] == 0))
            }
        }
    }

    /// BPE over every word, through the word cache.
    private func runModel(_ s: EncodeState) {
        // Work on locals moved out of the state: a struct reached through a class reference is retained
        // and released on every access, which costs more than the cache lookup itself.
        var ids = s.ids, cache = s.cache, cacheIds = s.cacheIds, bpe = s.bpe, mapped = s.mapped
        s.ids = []; s.cache = ByteKeyMap(capacity: 0); s.cacheIds = []; s.bpe = BPEScratch(); s.mapped = []
        defer { s.ids = ids; s.cache = cache; s.cacheIds = cacheIds; s.bpe = bpe; s.mapped = mapped }
        ids.removeAll(keepingCapacity: true)
        let byteLevel = s.words.byteLevel
        let spans = s.words.spans
        s.words.bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else {
                for span in spans where span.token >= 0 { ids.append(Int32(span.token)) }
                return
            }
            for span in spans {
                if span.token >= 0 { ids.append(Int32(span.token)); continue }
                let p = base + span.start, n = span.end - span.start
                if n == 0 { continue }
                let cacheable = n <= EncodeState.maxCachedWordBytes
                if cacheable, let (off, count) = cache.find(p, n) {
                    cacheIds.withUnsafeBufferPointer { c in
                        ids.append(contentsOf: UnsafeBufferPointer(rebasing: c[Int(off)..<Int(off + count)]))
                    }
                    continue
                }
                let before = ids.count
                if byteLevel {
                    mapped.removeAll(keepingCapacity: true)
                    ByteLevelMap.appendMapped(p, n, to: &mapped)
                    mapped.withUnsafeBufferPointer { m in model.tokenize(m.baseAddress!, m.count, into: &ids, scratch: &bpe) }
                } else {
                    model.tokenize(p, n, into: &ids, scratch: &bpe)
                }
                if cacheable {
                    if cache.count >= EncodeState.maxCacheEntries || cache.keyBytes >= EncodeState.maxCacheKeyBytes {
                        cache.removeAll()
                        cacheIds.removeAll(keepingCapacity: true)
                    }
                    cache.insert(p, n, Int32(cacheIds.count), Int32(ids.count - before))
                    cacheIds.append(contentsOf: ids[before...])
                }
            }
        }
    }

    // MARK: decode

    /// Text of `ids` through the decoder; unknown ids are skipped, special added tokens too when asked. A Replace
    /// regex of the file that runs past its limits leaves its text unreplaced; `decodeChecked` reports that instead.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var failure: TokenizerError?
        return decode(ids, skipSpecialTokens, &failure)
    }

    /// `decode`, failing with TokenizerError.regexLimit where a regex of the file's decoder ran past its limits.
    public func decodeChecked(_ ids: [Int], skipSpecialTokens: Bool = false) throws -> String {
        var failure: TokenizerError?
        let text = decode(ids, skipSpecialTokens, &failure)
        if let failure { throw failure }
        return text
    }

    private func decode(_ ids: [Int], _ skipSpecialTokens: Bool, _ failure: inout TokenizerError?) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let t = idToToken(id) else { continue }
            if skipSpecialTokens && specialContents.find(Array(t.utf8)) != nil { continue }
            tokens.append(t)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens, &failure).joined()
    }
}
