/// Where the data plane's AES-GCM work happens.
public enum CryptoMode: Sendable, Equatable {
    /// No encryption and no authentication: explicit opt-in only; the Rpc warns when it starts.
    case none
    /// The dispatch thread seals and opens every packet itself.
    case inline
    /// The Nexus's AES pool seals and opens every packet; the dispatch thread only hands off.
    case offload
    /// Inline for messages smaller than the threshold, the pool for larger ones (whole messages
    /// go one way, so their packets stay in order). nil: the threshold the pool measured at
    /// start-up, where handing a packet off starts to cost the dispatch thread less than sealing
    /// it. The default.
    case adaptive(thresholdBytes: Int?)

    public static var adaptive: CryptoMode { .adaptive(thresholdBytes: nil) }

    public var name: String {
        switch self {
        case .none: "none"
        case .inline: "inline"
        case .offload: "offload"
        case .adaptive: "adaptive"
        }
    }

    public var encrypts: Bool { self != .none }
    /// Whether sessions of this mode need an AES pool (offload and adaptive hand packets to it).
    public var usesPool: Bool {
        switch self {
        case .offload, .adaptive: true
        case .none, .inline: false
        }
    }

    /// Parses "none", "inline", "offload", "adaptive" or "adaptive:BYTES".
    public init?(name: String) {
        switch name {
        case "none": self = .none
        case "inline": self = .inline
        case "offload": self = .offload
        case "adaptive": self = .adaptive
        default:
            guard name.hasPrefix("adaptive:"), let n = Int(name.dropFirst("adaptive:".count)), n >= 0 else { return nil }
            self = .adaptive(thresholdBytes: n)
        }
    }
}
