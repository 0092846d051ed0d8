# Names only this host knows (profiles, sandboxes) are asked of the sbox
# being completed, while completing.

@TABLES@

function __sbox_names --argument-names kind --description 'The names of KIND (profiles, running, stored)'
    set -l sbox (commandline -opc)[1]
    test -n "$sbox"; or set sbox sbox
    set sbox (string replace -r '^~/' "$HOME/" -- $sbox)
    switch $kind
        case profiles
            command $sbox profile list --names 2>/dev/null </dev/null
        case running
            command $sbox ps --names 2>/dev/null </dev/null
        case stored
            command $sbox ps -a --names 2>/dev/null </dev/null
    end
end

function __sbox_operand --argument-names want --description 'Is the token being completed a first operand that names WANT?'
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l path ''
    set -l operands 0
    set -l ddash 0
    set -l pending 0
    for word in $tokens
        if test $pending = 1
            set pending 0
            continue
        end
        if test $ddash = 0
            switch $word
                case --
                    set ddash 1
                    continue
                case '-*=*'
                    continue
                case '-*'
                    __sbox_value_opt "$path" $word; and set pending 1
                    continue
            end
        end
        if test $operands = 0; and __sbox_parent "$path"
            set path (string trim -- "$path $word")
            continue
        end
        set operands (math $operands + 1)
    end
    test $pending = 0; and test $operands = 0; or return 1
    if test $ddash = 0; and string match -q -- '-*' (commandline -ct)
        return 1
    end
    __sbox_parent "$path"; and return 1
    set -l kind (__sbox_operand_kind "$path")
    test "$kind" = "$want"
end

# A profile can be a path to a .toml file too: a token that looks like a
# path is left to the file name completion.
function __sbox_not_path --description 'Does the token being completed not look like a path?'
    not string match -qr -- '/|^[.~]|^-[^=]*=[.~]' (commandline -ct)
end

complete -c sbox -n '__sbox_operand profiles; and __sbox_not_path' -f -a '(__sbox_names profiles)' -d profile
complete -c sbox -n '__sbox_operand running' -f -a '(__sbox_names running)' -d 'running sandbox'
complete -c sbox -n '__sbox_operand stored' -f -a '(__sbox_names stored)' -d sandbox
