import ArgumentParser
import EERPC

struct BenchAEAD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aead",
        abstract: "Every AES-GCM backend this CPU runs, sealing the same messages, in one run.",
        discussion: """
            Each backend seals 256 messages of each size in a loop on one thread pinned to one CPU, with \
            16 bytes of AAD (an eeRPC header), as `bench aes` does for its raw figure. The backends take \
            turns for a quarter of the time each, in the listed order and then in reverse, twice, so \
            drift on a shared machine hits them alike. Ratios are rates against ipsec-mb's.
            """
    )

    @Option(help: "Comma-separated message sizes in bytes (0: a control packet, whose header alone is authenticated).")
    var size = "64,1440,4096,65536"

    @Option(help: "Measured seconds per size and backend.")
    var seconds = 1.0

    @Option(help: "Key size in bits: 128 or 256.")
    var keyBits = 128

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        let sizes = try parseSizes(size, minimum: 0)
        guard keyBits == 128 || keyBits == 256 else { throw ValidationError("--key-bits must be 128 or 256") }
        let backends = AEADBackendKind.available
        let cpu = BenchCPUs.server
        let quarter = UInt64(seconds * 1e9) / 4
        var rows: [(size: Int, rates: [AESRate])] = []
        for s in sizes {
            var rates = backends.map { _ in AESRate.zero }
            for pass in 0..<4 {
                let order = pass % 2 == 0 ? Array(backends.indices) : backends.indices.reversed()
                for b in order {
                    rates[b].add(
                        try AESThroughput.raw(size: s, backend: backends[b], keyBytes: keyBits / 8, cpu: cpu, ns: quarter))
                }
            }
            rows.append((s, rates))
        }
        let reference = backends.firstIndex(of: .ipsecMB)
        // Messages per second against ipsec-mb's (the same as bytes per second at one size, and
        // defined for empty messages too).
        func ratio(_ rates: [AESRate], _ b: Int) -> Double {
            guard let reference, rates[b].nsPerMessage > 0 else { return 0 }
            return rates[reference].nsPerMessage / rates[b].nsPerMessage
        }
        if json {
            let results = rows.flatMap { row in
                backends.indices.map { b in
                    "{\"size\":\(row.size),\"backend\":\"\(backends[b].argument)\",\"key_bits\":\(keyBits),"
                        + "\"gbps\":\(fixed(row.rates[b].gbps, 2)),\"ns_per_msg\":\(fixed(row.rates[b].nsPerMessage, 1)),"
                        + "\"vs_ipsec_mb\":\(fixed(ratio(row.rates, b), 3))}"
                }
            }
            print("{\"preferred\":\"\(AEADBackendKind.preferred.argument)\",\"results\":[" + results.joined(separator: ",") + "]}")
        } else {
            print("eeRPC bench aead — AES-\(keyBits)-GCM seal, 16 B AAD, on CPU \(cpu); preferred here: \(AEADBackendKind.preferred.name)")
            print("")
            print(pad("size B", 10) + backends.map { pad($0.name + " ns", 24) }.joined() + "rate vs ipsec-mb")
            for row in rows {
                print(
                    pad("\(row.size)", 10) + backends.indices.map { pad(fixed(row.rates[$0].nsPerMessage, 1), 24) }.joined()
                        + backends.indices.map { "\(backends[$0].argument) \(fixed(ratio(row.rates, $0), 2))" }.joined(separator: ", "))
            }
        }
    }
}
