/*
 * The gateway's own YARA rules (layer 2 of the antivirus service), written for this project.
 * meta: score = symbol score (an integer, or a string such as "6.5") (YARA_<RULE>), virus = true makes a hit a hard virus finding.
 * The EICAR string is matched as two halves, so this file never contains it whole.
 */

rule EICAR_Test_File
{
    meta:
        description = "EICAR anti-virus test file"
        virus = true
    strings:
        $head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
        $tail = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
    condition:
        for any i in (1..#head) : ( $tail at @head[i] + 28 )
}

rule PowerShell_Download_Cradle
{
    meta:
        description = "PowerShell that downloads code and runs it"
        score = 6
    strings:
        $ps = "powershell" nocase ascii wide
        $dl1 = "DownloadString" nocase ascii wide
        $dl2 = "DownloadFile" nocase ascii wide
        $dl3 = "Net.WebClient" nocase ascii wide
        $dl4 = "Invoke-WebRequest" nocase ascii wide
        $dl5 = "Start-BitsTransfer" nocase ascii wide
        $dl6 = "DownloadData" nocase ascii wide
        $run1 = "Invoke-Expression" nocase ascii wide
        $run2 = /\bIEX\s*[\(\$]/ nocase ascii wide
        $run3 = "Start-Process" nocase ascii wide
        $enc = /powershell(\.exe)?["']?\s+(-\w+\s+)*-e(nc|ncodedcommand)?\s+[A-Za-z0-9+\/=]{40,}/ nocase
    condition:
        ($ps and any of ($dl*) and any of ($run*)) or $enc
}

rule HTML_Smuggling
{
    meta:
        description = "HTML that assembles a file in the browser and hands it to the user (HTML smuggling)"
        score = 6
    strings:
        $blob = /new\s+Blob\s*\(/ nocase
        $url = "createObjectURL" nocase
        $save = "msSaveOrOpenBlob" nocase
        $decode1 = "atob(" nocase
        $decode2 = "Uint8Array" nocase
        $download1 = /\.download\s*=/ nocase
        $download2 = /setAttribute\s*\(\s*["']download["']/ nocase
    condition:
        $blob and ($url or $save) and any of ($decode*) and (any of ($download*) or $save)
}
