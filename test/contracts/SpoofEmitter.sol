// SPDX-License-Identifier: UNLICENSED
// A spoofed deposit: emits an ERC-20 Transfer event (same signature and topics as a real token's) without
// holding or moving any balance. A watcher must ignore it because the log's address is not the token's.
pragma solidity ^0.8.0;

contract SpoofEmitter {
    event Transfer(address indexed from, address indexed to, uint256 value);

    function fake(address to, uint256 value) external {
        emit Transfer(msg.sender, to, value);
    }
}
