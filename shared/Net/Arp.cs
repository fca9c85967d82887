namespace ReVirt.Net;

/// <summary>
/// ARP (RFC 826) for IPv4 over Ethernet: answers requests for our address, learns senders that address us, resolves
/// next hops with up to <see cref="ArpTries"/> requests one second apart while a bounded number of frames wait, and
/// announces our address (RFC 5227 §2.3 gratuitous ARP) when asked — at start-up and when a replica takes over.
/// </summary>
public sealed partial class NetStack
{
    const long ArpRetryNs = 1_000_000_000, ArpTtlNs = 60_000_000_000;
    const int ArpTries = 3;

    sealed class ArpEntry { public MacAddress Mac; public long Expires; public long Stamp; }
    sealed class ArpWait { public readonly List<byte[]> Frames = []; public int Tries; public long Retry; }

    readonly SortedDictionary<uint, ArpEntry> _arp = new();
    readonly SortedDictionary<uint, ArpWait> _arpWait = new();
    long _arpStamp;

    void ArpInput(ReadOnlySpan<byte> p)
    {
        if (p.Length < Wire.ArpPacket) { Counters.DropShort++; return; }
        if (Wire.U16(p, 0) != 1 || Wire.U16(p, 2) != Wire.EtherTypeIp4 || p[4] != 6 || p[5] != 4)
        { Counters.DropBadLength++; return; }
        ushort op = Wire.U16(p, 6);
        var sha = MacAddress.Read(p[8..]);
        uint spa = Wire.U32(p, 14), tpa = Wire.U32(p, 24);
        if (op != Wire.ArpRequest && op != Wire.ArpReply) { Counters.DropUnknownProtocol++; return; }
        // A sender claiming our address, a zero (probe) or group address teaches nothing.
        bool learnable = spa != 0 && spa != Config.Ip && OnLink(spa) && (sha.Value & 0x0100_0000_0000) == 0 && sha.Value != 0;
        bool forUs = tpa == Config.Ip;
        if (learnable) ArpLearn(spa, sha, onlyIfKnown: !forUs);
        if (forUs && op == Wire.ArpRequest && AllowUnsolicited()) SendArp(Wire.ArpReply, sha, sha, tpa: spa);
    }

    /// <summary>RFC 826 merge: update an existing entry; add one only for a packet addressed to us.</summary>
    void ArpLearn(uint ip, MacAddress mac, bool onlyIfKnown)
    {
        if (_arp.TryGetValue(ip, out var e)) { e.Mac = mac; e.Expires = Now + ArpTtlNs; }
        else
        {
            if (onlyIfKnown) return;
            if (_arp.Count >= Config.ArpCacheSize)
            {
                // Evict the entry refreshed longest ago (ties impossible: stamps are unique).
                uint victim = _arp.MinBy(kv => kv.Value.Stamp).Key;
                _arp.Remove(victim);
            }
            _arp[ip] = e = new ArpEntry { Mac = mac, Expires = Now + ArpTtlNs };
        }
        e.Stamp = ++_arpStamp;
        if (_arpWait.Remove(ip, out var wait))
            foreach (var f in wait.Frames) { mac.Write(f); Emit(f); }
    }

    bool ArpLookup(uint ip, out MacAddress mac)
    {
        if (_arp.TryGetValue(ip, out var e) && e.Expires > Now) { mac = e.Mac; return true; }
        mac = MacAddress.Zero;
        return false;
    }

    void ArpPark(uint hop, byte[] frame)
    {
        if (!_arpWait.TryGetValue(hop, out var w))
        {
            if (_arpWait.Count >= Config.ArpPendingHosts) { Counters.ArpDropped++; return; }
            _arpWait[hop] = w = new ArpWait { Tries = 1, Retry = Now + ArpRetryNs };
            SendArp(Wire.ArpRequest, MacAddress.Broadcast, MacAddress.Zero, hop);
        }
        if (w.Frames.Count >= Config.ArpPendingFramesPerHost) { w.Frames.RemoveAt(0); Counters.ArpDropped++; }
        w.Frames.Add(frame);
    }

    long ArpDeadline()
    {
        long d = long.MaxValue;
        foreach (var w in _arpWait.Values) d = Math.Min(d, w.Retry);
        return d;
    }

    void ArpTimers()
    {
        foreach (var (ip, w) in _arpWait.ToArray())
        {
            if (w.Retry > Now) continue;
            if (w.Tries >= ArpTries) { Counters.ArpDropped += w.Frames.Count; _arpWait.Remove(ip); continue; }
            w.Tries++;
            w.Retry = Now + ArpRetryNs;
            SendArp(Wire.ArpRequest, MacAddress.Broadcast, MacAddress.Zero, ip);
        }
    }

    /// <summary>Broadcasts a gratuitous ARP request (sender = target = our address) so neighbours map our IP to our MAC.</summary>
    public void Announce() => Emit(GratuitousArp(Config.Mac, Config.Ip));

    /// <summary>The gratuitous ARP (RFC 5227 §2.3: an ARP request for our own address, broadcast) that announces
    /// <paramref name="mac"/> at <paramref name="ip"/>; a function of the interface's identity only, so a replica can
    /// send it before its stack runs (a takeover that announces early).</summary>
    public static byte[] GratuitousArp(MacAddress mac, uint ip) => ArpFrame(mac, ip, Wire.ArpRequest, MacAddress.Broadcast, MacAddress.Zero, ip);

    void SendArp(ushort op, MacAddress ethDst, MacAddress tha, uint tpa) => Emit(ArpFrame(Config.Mac, Config.Ip, op, ethDst, tha, tpa));

    static byte[] ArpFrame(MacAddress mac, uint ip, ushort op, MacAddress ethDst, MacAddress tha, uint tpa)
    {
        var f = new byte[Wire.MinFrame];
        ethDst.Write(f);
        mac.Write(f.AsSpan(6));
        Wire.U16(f, 12, Wire.EtherTypeArp);
        var p = f.AsSpan(Wire.EthHeader);
        Wire.U16(p, 0, 1);
        Wire.U16(p, 2, Wire.EtherTypeIp4);
        p[4] = 6; p[5] = 4;
        Wire.U16(p, 6, op);
        mac.Write(p[8..]);
        Wire.U32(p, 14, ip);
        tha.Write(p[18..]);
        Wire.U32(p, 24, tpa);
        return f;
    }

    void ArpState(StateCodec c)
    {
        c.Do(ref _arpStamp);
        int n = c.Count(_arp.Count);
        var entries = _arp.ToList();
        if (c.Reading) _arp.Clear();
        for (int i = 0; i < n; i++)
        {
            uint ip = c.Reading ? 0 : entries[i].Key;
            var e = c.Reading ? new ArpEntry() : entries[i].Value;
            ulong mac = e.Mac.Value;
            c.Do(ref ip); c.Do(ref mac); c.Do(ref e.Expires); c.Do(ref e.Stamp);
            e.Mac = new MacAddress(mac);
            if (c.Reading) _arp[ip] = e;
        }
        n = c.Count(_arpWait.Count);
        var waits = _arpWait.ToList();
        if (c.Reading) _arpWait.Clear();
        for (int i = 0; i < n; i++)
        {
            uint ip = c.Reading ? 0 : waits[i].Key;
            var a = c.Reading ? new ArpWait() : waits[i].Value;
            c.Do(ref ip); c.Do(ref a.Tries); c.Do(ref a.Retry);
            int m = c.Count(a.Frames.Count);
            for (int k = 0; k < m; k++)
            {
                var f = c.Reading ? [] : a.Frames[k];
                c.Do(ref f);
                if (c.Reading) a.Frames.Add(f);
            }
            if (c.Reading) _arpWait[ip] = a;
        }
    }
}
