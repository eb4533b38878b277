/// Upper bounds a receiver enforces before it allocates or decodes anything.
///
/// Every length field read from the wire is checked against these and against the actual frame
/// size first, so a hostile or corrupt length can never make a receiver allocate more than the
/// limit. Set them from the model size: a full parameter or gradient message carries
/// 4 · parameterCount raw bytes. The transport's own cap (ZMQ_MAXMSGSIZE) should be at least
/// `maxPayloadBytes + MessageHeader.size`.
public struct WireLimits: Sendable, Equatable {
    /// Largest accepted payload frame (encoded bytes).
    public var maxPayloadBytes: Int
    /// Largest accepted decoded payload (the header's raw length).
    public var maxRawBytes: Int
    /// Largest accepted JSON control payload.
    public var maxJSONBytes: Int

    public init(maxPayloadBytes: Int = 256 << 20, maxRawBytes: Int = 256 << 20, maxJSONBytes: Int = 1 << 20) {
        precondition(maxPayloadBytes >= 0 && maxRawBytes >= 0 && maxJSONBytes >= 0, "negative wire limit")
        self.maxPayloadBytes = maxPayloadBytes
        self.maxRawBytes = maxRawBytes
        self.maxJSONBytes = maxJSONBytes
    }

    /// 256 MiB payloads (64M Float32 parameters), 1 MiB JSON.
    public static let `default` = WireLimits()

    /// Limits sized for a model of `parameterCount` Float32 parameters, with `slack` extra bytes
    /// for codec framing (an incompressible chunked-LZ4 payload is slightly larger than raw).
    public static func forModel(parameterCount: Int, slack: Int = 1 << 20, maxJSONBytes: Int = 1 << 20) -> WireLimits {
        let raw = parameterCount.multipliedReportingOverflow(by: 4)
        let rawBytes = raw.overflow ? Int.max : raw.partialValue
        let payload = rawBytes.addingReportingOverflow(rawBytes / 200 + slack)
        return WireLimits(maxPayloadBytes: payload.overflow ? Int.max : payload.partialValue,
                          maxRawBytes: rawBytes, maxJSONBytes: maxJSONBytes)
    }
}
