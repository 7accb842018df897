import ArgumentParser

@main
struct EEKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eekv",
        abstract: "eekv: a sharded key-value store on eeRPC, an encrypted eRPC-class datacenter RPC runtime.",
        subcommands: [Bench.self, Certs.self]
    )
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that report figures as ratios against a reference measured in the same run.",
        subcommands: [BenchRPC.self, BenchAES.self]
    )
}
