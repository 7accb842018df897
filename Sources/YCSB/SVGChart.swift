import Glibc

/// Small self-contained SVG charts (line charts with a linear or logarithmic x axis, and grouped
/// bar charts), so `--plot` and the overhead study need no plotting tool. Each chart is a panel
/// placed in a document with ``SVGChart/document(width:height:panels:)``.
public enum SVGChart {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public init(name: String, points: [(x: Double, y: Double)]) {
            self.name = name
            self.points = points
        }
    }

    /// A panel: an SVG fragment drawn in a `width` × `height` box at the origin.
    public struct Panel {
        public var x: Double
        public var y: Double
        public var body: String
        public init(x: Double, y: Double, body: String) {
            self.x = x
            self.y = y
            self.body = body
        }
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    static let margin = (left: 64.0, right: 16.0, top: 28.0, bottom: 44.0)

    public static func document(width: Double, height: Double, panels: [Panel]) -> String {
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(n(width))\" height=\"\(n(height))\" "
        out += "viewBox=\"0 0 \(n(width)) \(n(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for p in panels { out += "<g transform=\"translate(\(n(p.x)),\(n(p.y)))\">\n\(p.body)</g>\n" }
        return out + "</svg>\n"
    }

    /// Lines through each series' points; `logX` spaces the x axis by decades.
    public static func lines(
        title: String, xLabel: String, yLabel: String, series: [Series], logX: Bool, width: Double, height: Double
    ) -> String {
        let xs = series.flatMap { $0.points.map(\.x) }.filter { !logX || $0 > 0 }
        let ys = series.flatMap { $0.points.map(\.y) }
        guard let xMin = xs.min(), let xMax = xs.max(), let yMax = ys.max() else {
            return frame(title: title, width: width, height: height) + "<text x=\"80\" y=\"60\">no data</text>\n"
        }
        let plotW = width - margin.left - margin.right
        let plotH = height - margin.top - margin.bottom
        let lo = logX ? pow10(floorLog10(xMin)) : min(0, xMin)
        let hi = logX ? pow10(floorLog10(xMax) + 1) : niceCeiling(xMax)
        let top = niceCeiling(yMax)
        func px(_ x: Double) -> Double {
            let f = logX ? (log10(max(x, lo)) - log10(lo)) / (log10(hi) - log10(lo)) : (x - lo) / max(hi - lo, 1e-12)
            return margin.left + f * plotW
        }
        func py(_ y: Double) -> Double { margin.top + plotH - y / max(top, 1e-12) * plotH }
        var out = frame(title: title, width: width, height: height)
        out += axes(xLabel: xLabel, yLabel: yLabel, width: width, height: height)
        // x ticks: decades on a log axis, five steps on a linear one.
        var ticks: [Double] = []
        if logX {
            var t = lo
            while t <= hi * 1.0001 {
                ticks.append(t)
                t *= 10
            }
        } else {
            ticks = (0...5).map { lo + (hi - lo) * Double($0) / 5 }
        }
        for t in ticks {
            out += "<line x1=\"\(n(px(t)))\" y1=\"\(n(margin.top))\" x2=\"\(n(px(t)))\" y2=\"\(n(margin.top + plotH))\" stroke=\"#eee\"/>"
            out += "<text x=\"\(n(px(t)))\" y=\"\(n(margin.top + plotH + 14))\" text-anchor=\"middle\">\(label(t))</text>\n"
        }
        out += yTicks(top: top, py: py, width: width)
        for (i, s) in series.enumerated() {
            let color = palette[i % palette.count]
            let points = s.points.filter { !logX || $0.x > 0 }.map { "\(n(px($0.x))),\(n(py($0.y)))" }
            out += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(points.joined(separator: " "))\"/>\n"
        }
        out += legend(series.map(\.name), x: margin.left + 8, y: margin.top + 12)
        return out
    }

    /// One group of bars per `groups` entry, one bar per series in each group.
    public static func bars(
        title: String, yLabel: String, groups: [String], series: [(name: String, values: [Double])], width: Double,
        height: Double
    ) -> String {
        let plotW = width - margin.left - margin.right
        let plotH = height - margin.top - margin.bottom
        let top = niceCeiling(series.flatMap(\.values).max() ?? 1)
        func py(_ y: Double) -> Double { margin.top + plotH - y / max(top, 1e-12) * plotH }
        var out = frame(title: title, width: width, height: height)
        out += axes(xLabel: "", yLabel: yLabel, width: width, height: height)
        out += yTicks(top: top, py: py, width: width)
        let groupW = plotW / Double(max(groups.count, 1))
        let barW = groupW * 0.8 / Double(max(series.count, 1))
        for (g, name) in groups.enumerated() {
            let x0 = margin.left + Double(g) * groupW + groupW * 0.1
            for (i, s) in series.enumerated() where g < s.values.count {
                let v = s.values[g]
                out += "<rect x=\"\(n(x0 + Double(i) * barW))\" y=\"\(n(py(v)))\" width=\"\(n(barW * 0.92))\" "
                out += "height=\"\(n(margin.top + plotH - py(v)))\" fill=\"\(palette[i % palette.count])\"/>\n"
            }
            out += "<text x=\"\(n(x0 + groupW * 0.4))\" y=\"\(n(margin.top + plotH + 14))\" text-anchor=\"middle\">\(escape(name))</text>\n"
        }
        out += legend(series.map(\.name), x: width - margin.right - 150, y: margin.top + 12)
        return out
    }

    // MARK: Pieces

    static func frame(title: String, width: Double, height: Double) -> String {
        "<text x=\"\(n(width / 2))\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(escape(title))</text>\n"
    }

    static func axes(xLabel: String, yLabel: String, width: Double, height: Double) -> String {
        let bottom = height - margin.bottom
        var out = "<line x1=\"\(n(margin.left))\" y1=\"\(n(margin.top))\" x2=\"\(n(margin.left))\" y2=\"\(n(bottom))\" stroke=\"black\"/>"
        out += "<line x1=\"\(n(margin.left))\" y1=\"\(n(bottom))\" x2=\"\(n(width - margin.right))\" y2=\"\(n(bottom))\" stroke=\"black\"/>\n"
        out += "<text x=\"\(n((margin.left + width - margin.right) / 2))\" y=\"\(n(height - 8))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        let midY = (margin.top + bottom) / 2
        out += "<text x=\"14\" y=\"\(n(midY))\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(n(midY)))\">\(escape(yLabel))</text>\n"
        return out
    }

    static func yTicks(top: Double, py: (Double) -> Double, width: Double) -> String {
        var out = ""
        for i in 0...5 {
            let v = top * Double(i) / 5
            out += "<line x1=\"\(n(margin.left))\" y1=\"\(n(py(v)))\" x2=\"\(n(width - margin.right))\" y2=\"\(n(py(v)))\" stroke=\"#eee\"/>"
            out += "<text x=\"\(n(margin.left - 4))\" y=\"\(n(py(v) + 4))\" text-anchor=\"end\">\(label(v))</text>\n"
        }
        return out
    }

    static func legend(_ names: [String], x: Double, y: Double) -> String {
        var out = ""
        for (i, name) in names.enumerated() {
            let yy = y + Double(i) * 14
            out += "<rect x=\"\(n(x))\" y=\"\(n(yy - 8))\" width=\"10\" height=\"10\" fill=\"\(palette[i % palette.count])\"/>"
            out += "<text x=\"\(n(x + 14))\" y=\"\(n(yy + 1))\">\(escape(name))</text>\n"
        }
        return out
    }

    /// A round number at or above `v` (1, 2 or 5 × 10^k).
    static func niceCeiling(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        let p = pow10(floorLog10(v))
        for m in [1.0, 2, 5, 10] where m * p >= v { return m * p }
        return 10 * p
    }

    static func floorLog10(_ v: Double) -> Int { Int(Glibc.floor(Glibc.log10(v))) }

    static func pow10(_ k: Int) -> Double { Glibc.pow(10, Double(k)) }

    static func log10(_ v: Double) -> Double { Glibc.log10(v) }

    /// 1234567 → "1.2M", 0.5 → "0.5".
    static func label(_ v: Double) -> String {
        if v >= 1_000_000 { return trim(v / 1_000_000) + "M" }
        if v >= 1_000 { return trim(v / 1_000) + "k" }
        return trim(v)
    }

    static func trim(_ v: Double) -> String {
        let r = (v * 10).rounded() / 10
        return r == r.rounded() ? String(Int(r)) : String(r)
    }

    /// Fixed-point with one decimal, for coordinates.
    static func n(_ v: Double) -> String {
        let r = (v * 10).rounded() / 10
        return r == r.rounded() ? String(Int(r)) : String(r)
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}

extension RunSummary {
    /// `--plot`: the latency CDF of each operation type (log latency axis) beside the
    /// throughput of each second of the run.
    public func svgPlot(title: String) -> String {
        let cdf = SVGChart.lines(
            title: "\(title): latency CDF", xLabel: "latency (µs, log scale)", yLabel: "percentile",
            series: perOperation.filter { !$0.cdf.isEmpty }.map { o in
                SVGChart.Series(name: o.name, points: o.cdf.map { (x: max($0.us, 0.1), y: $0.percentile) })
            }, logX: true, width: 520, height: 340)
        let rate = SVGChart.lines(
            title: "\(title): throughput", xLabel: "second of the run", yLabel: "operations per second",
            series: [
                SVGChart.Series(
                    // The last second is usually cut short by the end of the run: leave it out.
                    name: "ops/s",
                    points: perSecond.prefix(max(1, Int(seconds))).enumerated().map {
                        (x: Double($0.offset + 1), y: Double($0.element))
                    })
            ], logX: false, width: 520, height: 340)
        return SVGChart.document(
            width: 1_040, height: 340, panels: [.init(x: 0, y: 0, body: cdf), .init(x: 520, y: 0, body: rate)])
    }
}
