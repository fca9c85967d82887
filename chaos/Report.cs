using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ReVirt.Chaos;

/// <summary>The drill's outputs: the table on the console, report.json, timeline.svg and report.html.</summary>
public static class Report
{
    static string Ms(double? v) => v is double d ? d.ToString("F0", CultureInfo.InvariantCulture) : "-";

    /// <summary>A plain-text table: one row per round.</summary>
    public static string Table(IReadOnlyList<RoundResult> rs)
    {
        var rows = new List<string[]>
        {
            new[] { "#", "seed", "fault", "at (ms)", "outcome", "detect", "drain", "failover", "service", "done", "invariants" },
        };
        foreach (var r in rs)
        {
            var o = r.Observation;
            string inv = r.Ok ? $"{r.Invariants.Count}/{r.Invariants.Count} ok" : "FAIL " + string.Join(",", r.Invariants.Where(i => !i.Ok).Select(i => i.Name));
            rows.Add([(o.Round + 1).ToString(), o.Seed.ToString(), Faults.Name(o.Fault), Ms(o.FaultAtMs), r.Outcome, Ms(r.DetectionMs), Ms(r.DrainMs), Ms(r.FailoverMs), Ms(r.ServiceBackMs), r.Units.ToString(), inv]);
        }
        int[] w = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var sb = new StringBuilder();
        for (int i = 0; i < rows.Count; i++)
        {
            sb.AppendLine(string.Join("  ", rows[i].Select((c, j) => j is 0 or 1 or 3 or 5 or 6 or 7 or 8 or 9 ? c.PadLeft(w[j]) : c.PadRight(w[j]))).TrimEnd());
            if (i == 0) sb.AppendLine(string.Join("  ", w.Select(x => new string('-', x))));
        }
        sb.AppendLine("times in ms: detect = fault to the first side noticing; drain = the backup replaying what it held; failover = fault to the survivor going live; service = fault to its first output (a service: to the client's first answer from it)");
        if (rs.Count > 0) sb.AppendLine($"done = {rs[0].UnitName} done in the round" + (rs[0].UnitName == "requests" ? " (SETs answered OK and GETs answered, over every connection)" : ""));
        return sb.ToString();
    }

    /// <summary>Lines under the table for rounds whose backup heard the primary's wire (`--hears-primary`): the frames it
    /// heard, kept and gave its stack at the takeover (empty when no round's backup did).</summary>
    public static List<string> HeardLines(IReadOnlyList<RoundResult> rs) =>
        rs.Where(r => r.Observation.HearsPrimary).Select(r => (r.Observation.Round + 1, Heard(r.Observation.BackupHeard))).Select(x => x.Item2 is { } h
            ? $"round {x.Item1}: the backup heard {h.Read} frames on the primary's wire, kept the newest {h.Kept}, gave its stack {h.Given} that the log lacked " +
              $"(data {h.GivenData}, ack {h.GivenAck}, SYN/RST {h.GivenControl}, other {h.GivenOther}; not given: old {h.Old}, its own {h.Own}, for others {h.Foreign}; reader raised: {h.Raised})"
            : $"round {x.Item1}: the backup heard the primary's wire; no takeover used the frames").ToList();

    static HeardDto? Heard(ReplicaEventRecord? e) => e == null ? null
        : new HeardDto(e.Long("read") ?? 0, (int)(e.Long("atLoss") ?? 0), (int)(e.Long("largestBurst") ?? 0), (int)(e.Long("kept") ?? 0), (int)(e.Long("given") ?? 0), e.Bool("raised") ?? false,
            (int)(e.Long("old") ?? 0), (int)(e.Long("own") ?? 0), (int)(e.Long("foreign") ?? 0),
            (int)(e.Long("givenData") ?? 0), (int)(e.Long("givenAck") ?? 0), (int)(e.Long("givenControl") ?? 0), (int)(e.Long("givenOther") ?? 0));

    // ------------------------------------------------------------------ JSON

    /// <summary>A takeover's heard frames (the backup's heard-frames event: ReVirt.Linux.HeardCounts; what was not given and
    /// what was given, by kind: ReVirt.Net.NetStack.JudgeHeard).</summary>
    public sealed record HeardDto(long Read, int AtLoss, int LargestBurst, int Kept, int Given, bool Raised,
        int Old, int Own, int Foreign, int GivenData, int GivenAck, int GivenControl, int GivenOther);
    public sealed record InvariantDto(string Name, bool Ok, string Detail);
    public sealed record EventDto(double AtMs, string Lane, string Label);
    public sealed record RoundDto(
        int Round, int Seed, string Fault, string FaultDetail, double? FaultAtMs, double? FaultEndMs, string Outcome,
        double? DetectionMs, double? DrainMs, double? FailoverMs, double? ServiceBackMs, double DurationMs, int RequestsDone,
        bool Ok, List<InvariantDto> Invariants, List<EventDto> Timeline,
        long PrimaryStdoutBytes, long BackupStdoutBytes, int? PrimaryExit, int? BackupExit, string? ArbiterHolder, string? ArbiterRead, List<string> KilledAsHung, string Rerun, HeardDto? HeardFrames);
    /// <param name="HostsMadeBy">--hosts netns: who made the hosts: "root", or "user-namespace" (a drill run without root,
    /// root of a user namespace of its own); null on loopback.</param>
    public sealed record ReportDto(string Tool, string Workload, string Net, string Hosts, string? Arbiter, int Seed, int Rounds, string[] Faults, bool Ok, string? FirstViolation, DateTimeOffset Finished, List<RoundDto> RoundResults, string? HostsMadeBy, bool HearsPrimary);

    /// <summary>The report's hostsMadeBy: who made the hosts of a --hosts netns drill.</summary>
    public static string? HostsMadeBy(NetnsHosts? hosts) => hosts == null ? null : hosts.Rootless ? "user-namespace" : "root";

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static string Rerun(RoundResult r, string workload) =>
        $"chaos drill --rounds 1 --seed {r.Observation.Seed} --faults {Faults.Name(r.Observation.Fault)} --workload {workload}{(r.Observation.Connections?.VirtualNet == true ? " --net virtual" : "")}{(r.Observation.HearsPrimary ? " --hears-primary" : "")}";

    public static ReportDto ToDto(IReadOnlyList<RoundResult> rs, DrillSettings s) => new(
        "revirt chaos drill", s.Workload.Name, s.Network != null ? "virtual" : "host", s.Hosts != null ? "netns" : "local", s.Hosts != null ? "etcd" : "lock file", s.Seed, rs.Count, s.Faults.Select(Faults.Name).ToArray(), rs.All(r => r.Ok), FirstViolation(rs, s.Workload.Name),
        DateTimeOffset.UtcNow,
        rs.Select(r =>
        {
            var o = r.Observation;
            return new RoundDto(o.Round + 1, o.Seed, Faults.Name(o.Fault), o.FaultDetail, o.FaultAtMs, o.FaultEndMs, r.Outcome,
                r.DetectionMs, r.DrainMs, r.FailoverMs, r.ServiceBackMs, r.DurationMs, r.Units, r.Ok,
                r.Invariants.Select(i => new InvariantDto(i.Name, i.Ok, i.Detail)).ToList(),
                r.Timeline.Select(e => new EventDto(Math.Round(e.AtMs, 1), e.Lane, e.Label)).ToList(),
                o.PrimaryStdout.Length, o.BackupStdout.Length, o.PrimaryExit, o.BackupExit, o.ArbiterHolder, o.ArbiterRead, o.KilledAsHung, Rerun(r, s.Workload.Name), Heard(o.BackupHeard));
        }).ToList(), HostsMadeBy(s.Hosts), s.Network is VirtualNetwork { HearsPrimary: true });

    public static string? FirstViolation(IReadOnlyList<RoundResult> rs, string workload)
    {
        var bad = rs.FirstOrDefault(r => !r.Ok);
        if (bad == null) return null;
        var v = bad.FirstViolation!;
        return $"round {bad.Observation.Round + 1} ({Faults.Name(bad.Observation.Fault)}, seed {bad.Observation.Seed}): {v.Name}: {v.Detail} (rerun: {Rerun(bad, workload)})";
    }

    public static string ToJson(ReportDto d) => JsonSerializer.Serialize(d, Json);

    // ------------------------------------------------------------------ SVG timeline

    /// <summary>
    /// A self-contained SVG: one band per round, a lane per replica with its life as a bar and its output as ticks,
    /// the fault as a red band, detection, takeover and the return of service as labelled markers.
    /// </summary>
    public static string Svg(IReadOnlyList<RoundResult> rs)
    {
        const int left = 150, right = 30, width = 1100, laneH = 18, bandH = 92, top = 40;
        double maxMs = Math.Max(1000, rs.Count == 0 ? 1000 : rs.Max(r => r.DurationMs));
        double X(double ms) => left + (width - left - right) * Math.Clamp(ms, 0, maxMs) / maxMs;
        int height = top + rs.Count * bandH + 40;
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        string F(double v) => v.ToString("F1", ci);
        string E(string s) => WebUtility.HtmlEncode(s);
        sb.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n");
        sb.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        sb.Append($"<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">ReVirt chaos drill: fault (red), detection (orange), takeover / unprotected (green), output ticks per replica</text>\n");
        // time axis
        double step = maxMs > 20000 ? 5000 : maxMs > 8000 ? 2000 : 1000;
        for (double t = 0; t <= maxMs; t += step)
        {
            sb.Append($"<line x1=\"{F(X(t))}\" y1=\"{top - 5}\" x2=\"{F(X(t))}\" y2=\"{height - 30}\" stroke=\"#eee\"/>");
            sb.Append($"<text x=\"{F(X(t))}\" y=\"{height - 15}\" text-anchor=\"middle\" fill=\"#666\">{(t / 1000).ToString("F0", ci)} s</text>\n");
        }
        for (int i = 0; i < rs.Count; i++)
        {
            var r = rs[i];
            var o = r.Observation;
            double y0 = top + i * bandH;
            sb.Append($"<g><title>{E($"round {o.Round + 1}: {Faults.Name(o.Fault)} — {r.Outcome}")}</title>\n");
            sb.Append($"<text x=\"10\" y=\"{F(y0 + 14)}\" font-weight=\"bold\" fill=\"{(r.Ok ? "#1a7f37" : "#cf222e")}\">#{o.Round + 1} {E(Faults.Name(o.Fault))} {(r.Ok ? "✓" : "✗")}</text>\n");
            sb.Append($"<text x=\"10\" y=\"{F(y0 + 30)}\" fill=\"#555\">seed {o.Seed}</text>\n");
            sb.Append($"<text x=\"10\" y=\"{F(y0 + 46)}\" fill=\"#555\">{E(r.Outcome)}</text>\n");
            // fault band
            if (o.FaultAtMs is double fa)
            {
                double fe = o.FaultEndMs ?? (r.Timeline.FirstOrDefault(e => e.Label is "took over" or "unprotected")?.AtMs ?? fa + 30);
                sb.Append($"<rect x=\"{F(X(fa))}\" y=\"{F(y0 + 2)}\" width=\"{F(Math.Max(2, X(fe) - X(fa)))}\" height=\"{2 * laneH + 12}\" fill=\"#cf222e\" opacity=\"0.15\"/>");
                sb.Append($"<line x1=\"{F(X(fa))}\" y1=\"{F(y0)}\" x2=\"{F(X(fa))}\" y2=\"{F(y0 + 2 * laneH + 16)}\" stroke=\"#cf222e\" stroke-width=\"2\"><title>{E($"fault at {fa:F0} ms: {o.FaultDetail}")}</title></line>\n");
            }
            Lane(sb, "primary", y0 + 6, o.PrimaryChunks, o.PrimaryExitedAtMs ?? r.DurationMs, "#0969da");
            Lane(sb, "backup", y0 + 6 + laneH + 4, o.BackupChunks, o.BackupExitedAtMs ?? r.DurationMs, "#8250df");
            // markers
            int k = 0;
            foreach (var e in r.Timeline)
            {
                string color = e.Lane == "fault" ? "#cf222e" : e.Label is "primary lost" or "backup lost" ? "#bc4c00" : e.Label is "took over" or "unprotected" or "service back" ? "#1a7f37" : "#57606a";
                double ly = e.Lane == "backup" ? y0 + 6 + laneH + 4 : y0 + 6;
                sb.Append($"<circle cx=\"{F(X(e.AtMs))}\" cy=\"{F(ly + laneH / 2.0)}\" r=\"3.5\" fill=\"{color}\"><title>{E($"{e.AtMs:F0} ms {e.Lane}: {e.Label}")}</title></circle>");
                if (e.Label is "primary lost" or "backup lost" or "took over" or "unprotected" or "stood down" || e.Lane == "fault" && e.Label != "fault lifted")
                {
                    string text = e.Lane == "fault" ? Faults.Name(o.Fault) : e.Label;
                    sb.Append($"<text x=\"{F(X(e.AtMs) + 4)}\" y=\"{F(y0 + 2 * laneH + 24 + (k++ % 2) * 11)}\" fill=\"{color}\">{E(text)} {e.AtMs / 1000:F2}s</text>");
                }
            }
            sb.Append("\n</g>\n");
        }
        sb.Append("</svg>\n");
        return sb.ToString();

        void Lane(StringBuilder b, string name, double y, OutputChunk[] chunks, double end, string color)
        {
            b.Append($"<text x=\"{left - 6}\" y=\"{F(y + 12)}\" text-anchor=\"end\" fill=\"#333\">{name}</text>");
            b.Append($"<rect x=\"{left}\" y=\"{F(y)}\" width=\"{F(X(end) - left)}\" height=\"{laneH}\" fill=\"{color}\" opacity=\"0.12\"/>");
            double lastX = -10;
            foreach (var c in chunks)
            {
                double x = X(c.AtMs);
                if (x - lastX < 1.5) continue;
                lastX = x;
                b.Append($"<line x1=\"{F(x)}\" y1=\"{F(y + 3)}\" x2=\"{F(x)}\" y2=\"{F(y + laneH - 3)}\" stroke=\"{color}\"/>");
            }
            b.Append('\n');
        }
    }

    /// <summary>A self-contained HTML page: the summary, the table and the SVG timeline inline.</summary>
    public static string Html(IReadOnlyList<RoundResult> rs, DrillSettings s)
    {
        string E(string x) => WebUtility.HtmlEncode(x);
        var sb = new StringBuilder();
        bool ok = rs.All(r => r.Ok);
        sb.Append("<!doctype html><html><head><meta charset=\"utf-8\"><title>ReVirt chaos drill</title><style>body{font-family:sans-serif;margin:20px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}td.n{text-align:right}.ok{color:#1a7f37}.bad{color:#cf222e}</style></head><body>");
        sb.Append($"<h1>ReVirt chaos drill — <span class=\"{(ok ? "ok" : "bad")}\">{(ok ? "every invariant held" : "VIOLATION")}</span></h1>");
        sb.Append($"<p>workload {E(s.Workload.Name)}, seed {s.Seed}, {rs.Count} rounds, faults {E(string.Join(", ", s.Faults.Select(Faults.Name)))}</p>");
        if (!ok) sb.Append($"<p class=\"bad\">{E(FirstViolation(rs, s.Workload.Name)!)}</p>");
        sb.Append("<table><tr><th>#</th><th>seed</th><th>fault</th><th>at ms</th><th>outcome</th><th>detect ms</th><th>drain ms</th><th>failover ms</th><th>service ms</th><th>done</th><th>invariants</th></tr>");
        foreach (var r in rs)
        {
            var o = r.Observation;
            string inv = string.Join("<br>", r.Invariants.Select(i => $"<span class=\"{(i.Ok ? "ok" : "bad")}\" title=\"{E(i.Detail)}\">{(i.Ok ? "✓" : "✗")} {E(i.Name)}</span>"));
            sb.Append($"<tr><td class=n>{o.Round + 1}</td><td class=n>{o.Seed}</td><td title=\"{E(o.FaultDetail)}\">{E(Faults.Name(o.Fault))}</td><td class=n>{Ms(o.FaultAtMs)}</td><td>{E(r.Outcome)}</td><td class=n>{Ms(r.DetectionMs)}</td><td class=n>{Ms(r.DrainMs)}</td><td class=n>{Ms(r.FailoverMs)}</td><td class=n>{Ms(r.ServiceBackMs)}</td><td class=n>{r.Units}</td><td>{inv}</td></tr>");
        }
        sb.Append("</table><h2>Timeline</h2>");
        sb.Append(Svg(rs));
        sb.Append("</body></html>\n");
        return sb.ToString();
    }

    /// <summary>Writes report.json, timeline.svg and report.html into <paramref name="dir"/>; returns their paths.</summary>
    public static string[] Write(string dir, IReadOnlyList<RoundResult> rs, DrillSettings s)
    {
        Directory.CreateDirectory(dir);
        string json = Path.Combine(dir, "report.json"), svg = Path.Combine(dir, "timeline.svg"), html = Path.Combine(dir, "report.html");
        File.WriteAllText(json, ToJson(ToDto(rs, s)));
        File.WriteAllText(svg, Svg(rs));
        File.WriteAllText(html, Html(rs, s));
        return [json, svg, html];
    }
}
