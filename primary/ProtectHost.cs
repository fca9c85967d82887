using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ReVirt.Abi;
using ReVirt.Linux;
using ReVirt.Log;
using ReVirt.Replay;
using ReVirt.Replication;

namespace ReVirt.Primary;

/// <summary>`primary protect`: a hosted service that runs the guest recording, streaming its log to the backup.</summary>
public static class ProtectHost
{
    public static int Run(ProtectSettings settings, MachineOptions opts, ulong checkpointInterval, bool stats)
    {
        if (!Directory.Exists(opts.Root)) { Console.Error.WriteLine($"primary: --root {opts.Root}: no such directory"); return 2; }
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<IHostLifetime, QuietLifetime>(); // signals go to the guest, not to the host
        var svc = new ProtectService(settings, opts, checkpointInterval, stats);
        builder.Services.AddSingleton<IHostedService>(svc);
        using var host = builder.Build();
        svc.Lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        host.Run();
        return svc.ExitCode;
    }
}

sealed class QuietLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

sealed class ProtectService(ProtectSettings settings, MachineOptions opts, ulong checkpointInterval, bool stats) : BackgroundService
{
    public IHostApplicationLifetime? Lifetime;
    public int ExitCode = 1;
    static TextWriter Log => Console.Error;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try { ExitCode = await RunAsync(); }
        catch (Exception e) { Log.WriteLine($"primary: {e.Message}"); ExitCode = 1; }
        finally { Lifetime?.StopApplication(); }
    }

    async Task<int> RunAsync()
    {
        byte[] image;
        try { image = File.ReadAllBytes(Kernel.ResolveProgram(opts).HostPath); }
        catch (ElfLoadException e) { Log.WriteLine($"primary: {e.Message}"); return 127; }
        var header = Recording.Header(opts, image, checkpointInterval);
        var encoded = header.Encode();
        var client = new ReplicationClient(settings, Log);
        try { await client.ConnectAsync(encoded); }
        catch (ReplicationRefusedException e)
        {
            Log.WriteLine($"primary: refused: {e.Message}");
            return 2;
        }
        Log.WriteLine($"primary: protected by {client.BackupId} at {settings.BackupUrl}");

        var writer = new LogWriter(header, client);
        var boundary = new RecordingBoundary(writer, header.CheckpointInterval) { Gate = client.Gate };
        int status = 0;
        ulong icount = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Exception? failure = null;
        var guest = new Thread(() =>
        {
            try
            {
                using var m = new Machine(opts, boundary);
                m.Load();
                status = m.Run();
                icount = m.InstructionCount;
            }
            catch (ElfLoadException e) { Log.WriteLine($"primary: {e.Message}"); status = 126; }
            catch (Exception e) { failure = e; }
        }, 64 << 20) { Name = "guest" };
        guest.Start();
        await Task.Run(guest.Join);
        if (failure != null) throw failure;
        if (client.Fenced()) return 3;
        await client.FinishAsync(writer.LastSequence, status);
        if (client.Fenced()) return 3;
        if (stats)
        {
            var hold = client.Gate.HoldTimesMs();
            Array.Sort(hold);
            double P(double q) => hold.Length == 0 ? 0 : hold[Math.Min(hold.Length - 1, (int)(q * hold.Length))];
            double s = sw.Elapsed.TotalSeconds;
            Log.WriteLine($"primary: {icount} guest instructions in {s:F3} s, exit status {status}");
            Log.WriteLine($"primary: log {writer.LastSequence} records, {writer.BytesWritten} bytes ({writer.BytesWritten / s / 1e6:F2} MB/s), {client.Batches} batches; throttled {client.Throttled.TotalMilliseconds:F0} ms");
            Log.WriteLine($"primary: output commit: {hold.Length} outputs held, p50 {P(0.5):F3} ms, p99 {P(0.99):F3} ms");
            hold = client.Gate.SendWaitTimesMs();
            Array.Sort(hold);
            Log.WriteLine($"primary: output commit: {hold.Length} socket sends waited, p50 {P(0.5):F3} ms, p99 {P(0.99):F3} ms");
        }
        return status;
    }
}
