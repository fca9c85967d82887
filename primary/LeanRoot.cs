namespace ReVirt.Primary;

/// <summary>
/// When a command line may be parsed under a plain root <c>Command</c> instead of a <c>RootCommand</c>. The two trees
/// differ only in what RootCommand adds: its help option (--help, -h, /h, -?, /?; recursive), its --version option
/// and its [suggest] directive. A command line none of whose tokens can name one of those (not even inside a
/// response file, a POSIX bundle of single-letter options, or an `--option:value` / `--option=value` token) is
/// tokenized alike under both, so a parse without errors under the plain root has the meaning the full tree gives
/// it. The test is by token and conservative: a guest argument such as `ls -h` sends the line to the full tree,
/// which costs only time. (Plain loops: the framework's ordinal string searches are vectorised code that an AVX2
/// host JIT-compiles at first use.)
/// </summary>
static class LeanRoot
{
    public static bool Fits(string[] args)
    {
        foreach (var t in args)
        {
            if (t.Length == 0) continue;
            // response files (their tokens are unseen here) and directives
            if (t[0] is '@' or '[') return false;
            if (t.Length > 1 && t[0] == '-' && t[1] == '-')
            {
                if (Names(t, "--help") || Names(t, "--version")) return false;
            }
            else if (t[0] == '-')
            {
                // -h, -?, and bundles or -h:value forms holding them (ReVirt has no single-letter options of its own)
                foreach (char c in t)
                    if (c is 'h' or '?') return false;
            }
            else if (t[0] == '/' && (Names(t, "/h") || Names(t, "/?"))) return false;
        }
        return true;
    }

    /// <summary>Whether a token is the option `name`, alone or with a value after ':' or '='.</summary>
    static bool Names(string token, string name)
    {
        if (token.Length < name.Length) return false;
        for (int i = 0; i < name.Length; i++)
            if (token[i] != name[i]) return false;
        return token.Length == name.Length || token[name.Length] is ':' or '=';
    }
}
