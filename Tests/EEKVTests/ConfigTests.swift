import EEKV
import EERPC
import Testing

@Suite("Cluster configuration")
struct ConfigTests {
    static let node = "[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = 1000\nudp_port = 2000\n"

    @Test("the example cluster config parses: 3 nodes, every slot owned once")
    func example() throws {
        let config = try ClusterConfig.load(path: "deploy/cluster.example.toml")
        #expect(config.nodes.count == 3)
        #expect(config.nodes.map(\.slots.count).reduce(0, +) == HashSlot.count)
        #expect(config.crypto == .adaptive && config.durability == .fsync)
    }

    @Test(
        "mistakes are errors, not silent defaults",
        arguments: [
            "[cluster]\ncrypto = 1\n" + node,  // wrong type
            "[cluster]\ndurability = \"sometimes\"\n" + node,  // bad value
            "[cluster]\ncrypto = \"none\"\nthread = 2\n" + node,  // unknown key
            "[clusterr]\n" + node,  // unknown table
            "[cluster]]\n" + node,  // bad header
            "[cluster]\ncrypto = \"none\"\ncrypto = \"inline\"\n" + node,  // duplicate key
            "[cluster]\ncrypto = \"none\"\n" + node + "threads = \"4\"\n",  // wrong type in a node
            "[cluster]\ncrypto = \"none\"\n" + node + "slots = [5]\n",  // malformed slots
            "[cluster]\ncrypto = \"none\"\n" + node + "udp-port = 3\n",  // misspelt key
            "[cluster]\ncrypto = \"inline\"\n" + node,  // encryption without [tls]
            "[cluster]\ncrypto = \"none\"\n",  // no nodes
            "[cluster]\ncrypto = \"none\"\nmtu = 100\n" + node,  // MTU below the minimum
            "[cluster]\ncrypto = \"none\"\nmtu = 70000\n" + node,  // MTU above a UDP datagram
            "[cluster]\ncrypto = \"none\"\nmax_store_mib = 0\n" + node,  // a store cap of nothing
            "[cluster]\ncrypto = \"none\"\nmax_store_mib = \"1G\"\n" + node,  // a cap that is not a number
            "[cluster]\ncrypto = \"none\"\n" + node + "[node]\nid = 1\nhost = \"h\"\nport = 1\nudp_port = 2\n",  // [node], not [[node]]
            "[cluster]\ncrypto = \"none\"\n[[node]]\nid = -1\nhost = \"h\"\nport = 1000\nudp_port = 2000\n",  // negative id
            "[cluster]\ncrypto = \"none\"\n[[node]]\nid = 9223372036854775807\nhost = \"h\"\nport = 1000\nudp_port = 2000\n",  // huge id
            "[cluster]\ncrypto = \"none\"\n" + node + node.replacing("id = 0", with: "id = 1").replacing("udp_port = 2000", with: "udp_port = 3000"),  // one TCP port for two nodes
            "[cluster]\ncrypto = \"none\"\n" + node + "threads = 4\n" + node.replacing("id = 0", with: "id = 1").replacing("port = 1000", with: "port = 1001").replacing("udp_port = 2000", with: "udp_port = 2003"),  // UDP ranges overlap
            "[cluster]\ncrypto = \"none\"\n" + node + "threads = 1_\n",  // an underscore not between digits
            "[cluster]\ncrypto = \"none\"\n" + node + "threads = _1\n",
        ])
    func rejected(text: String) {
        #expect(throws: ClusterConfig.Error.self) { try ClusterConfig.parse(text, source: "test.toml") }
    }

    @Test("nodes on one host need their own TCP port and UDP ports; on different hosts they may share them")
    func distinctAddresses() throws {
        let second = Self.node.replacing("id = 0", with: "id = 1").replacing("port = 1000", with: "port = 1001")
            .replacing("udp_port = 2000", with: "udp_port = 2004")
        let four = "[cluster]\ncrypto = \"none\"\n" + Self.node + "threads = 4\n" + second
        #expect(try ClusterConfig.parse(four, source: "t.toml").nodes.count == 2)  // 2000-2003 and 2004
        let elsewhere = "[cluster]\ncrypto = \"none\"\n" + Self.node + Self.node.replacing("id = 0", with: "id = 1")
            .replacing("127.0.0.1", with: "127.0.0.2")
        #expect(try ClusterConfig.parse(elsewhere, source: "t.toml").nodes.count == 2)
        #expect {
            _ = try ClusterConfig.parse("[cluster]\ncrypto = \"none\"\n" + Self.node + Self.node.replacing("id = 0", with: "id = 1"), source: "t.toml")
        } throws: { "\($0)".contains("nodes 0 and 1 both use 127.0.0.1 port 1000") }
    }

    @Test("a config path that cannot be read is reported as such, not as an empty config")
    func unreadable() {
        #expect {
            _ = try ClusterConfig.load(path: "/tmp")
        } throws: { "\($0)".contains("cannot read the cluster config /tmp: Is a directory") }
    }

    @Test("the data-plane MTU defaults to a 1500-byte Ethernet frame's; jumbo frames are a setting")
    func mtu() throws {
        #expect(try ClusterConfig.parse("[cluster]\ncrypto = \"none\"\n" + Self.node, source: "t.toml").mtu == 1_472)
        #expect(try ClusterConfig.parse("[cluster]\ncrypto = \"none\"\nmtu = 8972\n" + Self.node, source: "t.toml").mtu == 8_972)
    }

    @Test("a store cap is optional and given in MiB")
    func storeCap() throws {
        #expect(try ClusterConfig.parse("[cluster]\ncrypto = \"none\"\n" + Self.node, source: "t.toml").maxStoreBytes == nil)
        let capped = try ClusterConfig.parse("[cluster]\ncrypto = \"none\"\nmax_store_mib = 512\n" + Self.node, source: "t.toml")
        #expect(capped.maxStoreBytes == 512 << 20)
    }

    @Test("an escaped quote does not end a string: a # after it is text, not a comment")
    func escapedQuoteBeforeHash() throws {
        let doc = try TOMLDocument(parsing: ##"name = "a\"#b" # comment"## + "\n" + ##"path = "c:\\" # a backslash ends it"##)
        #expect(doc.tables[""]?["name"] == .string(##"a"#b"##))
        #expect(doc.tables[""]?["path"] == .string(##"c:\"##))
    }

    @Test("decimal integers with leading zeros are refused (TOML 1.0), naming the line")
    func leadingZeros() throws {
        for bad in ["0123", "+0123", "-01", "00", "0_1"] {
            #expect {
                _ = try TOMLDocument(parsing: "a = 1\nport = \(bad)\n")
            } throws: { error in
                guard let error = error as? TOMLDocument.ParseError else { return false }
                return error.line == 2 && error.reason.contains("leading zero")
            }
        }
        let doc = try TOMLDocument(parsing: "a = 0\nb = +0\nc = -0\nd = 10\ne = 1_000\nf = [0, 7]\n")
        #expect(
            doc.tables[""] == [
                "a": .integer(0), "b": .integer(0), "c": .integer(0), "d": .integer(10), "e": .integer(1_000),
                "f": .array([.integer(0), .integer(7)]),
            ])
        let zeroPort = Self.node.replacing("port = 1000", with: "port = 01000")
        #expect(throws: ClusterConfig.Error.self) {
            try ClusterConfig.parse("[cluster]\ncrypto = \"none\"\n" + zeroPort, source: "t.toml")
        }
    }

    @Test("hash slots are Redis Cluster's (CRC16-XMODEM, hash tags)")
    func slots() {
        #expect(HashSlot.of(Array("123456789".utf8)) == 0x31C3 & 0x3FFF)
        #expect(HashSlot.of(Array("{user1000}.following".utf8)) == HashSlot.of(Array("{user1000}.followers".utf8)))
        // A tag's hash is the tag's alone: CRC16("user1000") = 0x4D73, not the whole key's (12218).
        #expect(HashSlot.of(Array("{user1000}.following".utf8)) == 0x4D73 & 0x3FFF)
        // Empty braces are no tag: the whole key is hashed (CRC16("foo{}bar") = 47060), not "".
        #expect(HashSlot.of(Array("foo{}bar".utf8)) == 47_060 & 0x3FFF)
    }
}
