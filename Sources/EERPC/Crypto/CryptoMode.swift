/// Where the data plane's AES-GCM work happens.
public enum CryptoMode: Sendable, Equatable {
    /// No encryption and no authentication: explicit opt-in only; the Rpc warns when it starts.
    case none
    /// The dispatch thread seals and opens every packet itself.
    case inline

    public var name: String {
        switch self {
        case .none: "none"
        case .inline: "inline"
        }
    }

    public var encrypts: Bool { self != .none }
}
