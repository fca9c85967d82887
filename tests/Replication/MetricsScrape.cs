using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace ReVirt.Tests.Replication;

/// <summary>A minimal Prometheus scraper for a replica's `--metrics-listen` endpoint: one bounded HTTP/1.1 GET and
/// the exposition's sample lines.</summary>
static class MetricsScrape
{
    /// <summary>Sample lines of an exposition: name (with labels) → value.</summary>
    public static Dictionary<string, double> Samples(string body) => body.Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Where(l => !l.StartsWith('#'))
        .Select(l => (Name: l[..l.LastIndexOf(' ')], Value: double.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture)))
        .ToDictionary(s => s.Name, s => s.Value);

    /// <summary>One HTTP/1.1 GET (a scraper), bounded by socket time-outs.</summary>
    public static (int Status, string? Type, string Body) Get(string url)
    {
        var u = new Uri(url);
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 10_000, SendTimeout = 10_000 };
        s.Connect(u.Host, u.Port);
        s.Send(Encoding.ASCII.GetBytes($"GET {u.PathAndQuery} HTTP/1.1\r\nHost: {u.Authority}\r\nAccept: text/plain\r\n\r\n"));
        var ms = new MemoryStream();
        var buf = new byte[8192];
        int n;
        while ((n = s.Receive(buf)) > 0) ms.Write(buf, 0, n);
        string text = Encoding.UTF8.GetString(ms.ToArray());
        int end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var head = text[..end].Split("\r\n");
        string? type = head.Skip(1).Select(h => h.Split(':', 2)).FirstOrDefault(h => h[0].Equals("Content-Type", StringComparison.OrdinalIgnoreCase))?[1].Trim();
        return (int.Parse(head[0].Split(' ')[1], CultureInfo.InvariantCulture), type, text[(end + 4)..]);
    }

    /// <summary>One sample of the endpoint at <paramref name="url"/>.</summary>
    public static double Sample(string url, string name)
    {
        var (status, _, body) = Get(url);
        if (status != 200) throw new InvalidOperationException($"{url} answered {status}");
        return Samples(body)[name];
    }
}
