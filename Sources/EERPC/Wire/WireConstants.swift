/// Protocol constants shared by both ends of a session. Changing one is a wire-format change.
public enum Wire {
    /// First byte of every data-plane packet; filters foreign datagrams.
    public static let magic: UInt8 = 0xEE
    /// Bytes of eeRPC header at the start of every packet (see ``PacketHeader``).
    public static let headerSize = 16
    /// Bytes reserved at the end of every packet for the AEAD tag of the encrypted datapath.
    /// Plaintext sessions do not send them, but packetization already leaves room, so turning
    /// encryption on does not change how a message is cut into packets.
    public static let tagSize = 16
    /// Largest message (request or response) in bytes: 8 MiB. Fits the 24-bit size field.
    public static let maxMessageSize = 8 << 20
    /// Outstanding requests per session (slots). Slot = request number mod window.
    public static let sessionRequestWindow = 8
    /// Packets a client may have in flight per session. eRPC's 32 covers a NIC's bandwidth-delay
    /// product; through the kernel's UDP stack a round trip includes both ends' batches, and a
    /// 64 KiB response (46 packets) took more than one window of RFR round trips. 64 measured
    /// 8-22 % more reads/s at 64 KiB (paired runs) and more on YCSB-E's scans, plaintext and encrypted alike.
    /// The default and the most a client may use (``RpcConfig/sessionCredits``): a server answers
    /// runs of at most this many packets.
    public static let sessionCredits = 64
    /// A request-for-response's size field holds its run length in the low 8 bits (at most
    /// ``sessionCredits``) and the client's attempt number above them (see
    /// ``PacketHeader/requestForResponse(destSession:requestType:requestNumber:packetNumber:count:attempt:)``).
    public static let rfrCountBits = 8
    /// The run-length bits of an RFR's size field.
    public static let rfrCountMask = (1 << rfrCountBits) - 1
    /// Largest RFR attempt number: 15 bits, so the size field stays within ``maxMessageSize``.
    public static let maxRFRAttempt = 0x7FFF
    /// The size field of a "handler running" notice: a credit return for a request's last packet,
    /// sent when that packet arrives again while the handler still works on it. No message has
    /// this size, so the notice's nonce (size ‖ request ‖ packet number) is none of the
    /// response's, whose packet 0 has the same packet number.
    public static let handlerRunningMark: UInt32 = 0xFF_FFFF
    /// Default UDP payload per packet: a 1500-byte Ethernet MTU less IPv4 and UDP headers.
    public static let defaultMTU = 1472
    /// Largest UDP payload (loopback only; real NICs use `defaultMTU`).
    public static let maxMTU = 65_507
    /// Smallest MTU: keeps request + response packet numbers of an 8 MiB exchange within 16 bits.
    public static let minMTU = 512

    /// Application bytes carried per packet at a given MTU.
    @inlinable
    public static func dataPerPacket(mtu: Int) -> Int { mtu - headerSize - tagSize }

    /// Packets needed for a message of `size` bytes (a 0-byte message still takes one packet).
    @inlinable
    public static func packetCount(size: Int, dataPerPacket: Int) -> Int {
        size == 0 ? 1 : (size + dataPerPacket - 1) / dataPerPacket
    }
}
